"""The command line's conventions: --set overrides, --device / --dtype, refusing an unavailable
device, --version, `harness suites`, `harness cache`, plain progress lines off a terminal, a
calibrated ETA, and the report's run time summed over cells."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from harness.cli import app
from harness.sweep import SuiteError, expand_cells, load_suite
from harness.sweep.cell import Cell

REPO = Path(__file__).resolve().parents[1]
SUITE = ("name: c\ntask:\n  - name: analytic\n  - name: mqar\n    params: {steps: 2, n_train: 8, n_test: 4}\n"
         "model: {n_layers: 2, d_model: 32, n_heads: 2, vocab_size: 32}\naxes: {variant: gla, seq_len: [32, 64]}\n")


def cli(*args: str, env: dict | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture
def suite(tmp_path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(SUITE)
    return path


def test_set_overrides_change_the_cells_and_their_ids(suite):
    plain = expand_cells(load_suite(suite))
    changed = expand_cells(load_suite(suite, ["model.d_model=64", "axes.seq_len=[128]", "params.steps=5"]))
    assert {c.model["d_model"] for c in changed} == {64} and {c.seq_len for c in changed} == {128}
    assert {c.params["steps"] for c in changed if c.task == "mqar"} == {5}  # only the task that has it
    assert not {c.cell_id for c in plain} & {c.cell_id for c in changed}
    one = expand_cells(load_suite(suite, ["task.mqar.params.n_test=2", "axes.layout='1:1'"]))
    assert {c.params["n_test"] for c in one if c.task == "mqar"} == {2}
    assert {c.model["layout"] for c in one} == {"1:1"}  # a YAML value: 1:1 stays a string


@pytest.mark.parametrize("override, fragment", [
    ("model.d_model=abc", "model.d_model: Input should be a valid integer"),
    ("nokey", "expected KEY=VALUE"),
    ("params.no_such=1", "no task of this suite has a parameter 'no_such'"),
    ("task.lm.params.steps=1", "with a task of this suite: analytic, mqar"),
    ("axes.seq_len=[1, 2", "the value is not valid YAML"),
])
def test_a_bad_override_is_a_clear_error(suite, override, fragment):
    with pytest.raises(SuiteError, match=None) as info:
        expand_cells(load_suite(suite, [override]))
    assert fragment in " ".join(str(info.value).split())
    code, out = cli("sweep", str(suite), "--set", override, "--dry-run")
    assert code == 2 and fragment in out and "Traceback" not in out


def test_device_and_dtype_shortcuts(suite):
    cells = expand_cells(load_suite(suite, device="cpu", dtype="float64"))
    assert {(c.device, c.dtype) for c in cells} == {("cpu", "float64")}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_is_refused_before_anything_runs(suite, tmp_path):
    code, out = cli("sweep", str(suite), "--device", "cuda", "--out", str(tmp_path / "r"), "--no-report")
    assert code == 2 and "device 'cuda' is not available on this machine" in out and "Nothing was run" in out
    assert not (tmp_path / "r").exists()
    code, out = cli("sweep", str(suite), "--device", "cuda", "--dry-run")  # planning still works
    assert code == 0 and "a run would be refused" in out


def test_version_and_help_flags():
    code, out = cli("--version")
    assert code == 0 and out.startswith("hybrid-attention-harness ")
    code, out = cli("sweep", "--help")
    assert "--dry-run <bool>" not in out and "--dry-run Validate" in out and "--set KEY=VALUE" in out
    code, out = cli("--help")
    assert "--install-completion" in out


def test_suites_lists_the_shipped_and_yours_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "quickstart.yaml").write_text(SUITE.replace("name: c", "name: quickstart"))
    code, out = cli("suites")
    assert code == 0 and "cpu-recall" in out and "shipped" in out
    from harness.sweep import find_suite

    assert find_suite("quickstart") == Path("suites") / "quickstart.yaml" or \
        find_suite("quickstart").resolve() == (tmp_path / "suites" / "quickstart.yaml").resolve()


def test_cache_info_and_clear_touch_only_the_cache_files(tmp_path):
    env = {"HARNESS_CACHE_DIR": str(tmp_path)}
    ours = tmp_path / ("a" * 64 + ".pt")
    ours.write_bytes(b"x" * 1000)
    keep = tmp_path / "notes.txt"
    keep.write_text("not the cache's")
    code, out = cli("cache", "info", env=env)
    assert code == 0 and "1 file(s)" in out and str(tmp_path) in out
    code, out = cli("cache", "clear", env=env)
    assert code == 0 and "removed 1 file(s)" in out
    assert not ours.exists() and keep.exists()


def _cell(task: str, seq_len: int) -> Cell:
    return Cell(suite="s", task=task, params={}, model={"d_model": 32, "n_layers": 2, "layout": "pure",
                                                        "variant": "gla", "n_heads": 2}, seq_len=seq_len)


def test_eta_is_weighted_by_each_tasks_cost():
    """Cheap analytic cells finishing first must not make the training cells look quick."""
    from harness.sweep.progress import CostModel

    cells = ([_cell("analytic", 64 * (i + 1)) for i in range(4)]
             + [_cell("efficiency", 4096 * (i + 1)) for i in range(3)])
    model = CostModel(cells)
    assert model.eta([c.cell_id for c in cells]) is None  # nothing finished yet
    for c in cells[:4]:
        model.observe(c, 0.05)  # analytic as fast as its prior
    left = [c.cell_id for c in cells[4:]]
    eta = model.eta(left)
    assert eta == pytest.approx(sum(model.expected[i] for i in left))  # the efficiency priors (rate 1 so far)
    assert eta > 10 * 3 * 0.05  # not "3 more cells as quick as the ones so far"
    model.observe(cells[4], 2 * model.expected[cells[4].cell_id])  # efficiency twice as slow as its prior
    assert model.eta(left[1:]) == pytest.approx(2 * sum(model.expected[i] for i in left[1:]))


def test_progress_off_a_terminal_prints_a_line_per_cell(tmp_path):
    from harness.sweep.driver import run_sweep

    path = tmp_path / "s.yaml"
    path.write_text("name: s\ntask: analytic\nmodel: {n_layers: 2, d_model: 32, n_heads: 2}\n"
                    "axes: {variant: gla, seq_len: [64, 128, 256]}\n")
    buf = io.StringIO()
    run_sweep("s", expand_cells(load_suite(path)), tmp_path / "r", console=Console(file=buf, width=200))
    lines = [ln for ln in buf.getvalue().splitlines() if ln.startswith("[")]
    assert [ln.split()[0] for ln in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    assert all(" ok analytic gla pure" in ln and "ETA" in ln and "elapsed" in ln for ln in lines)


def test_report_run_time_sums_cells_not_rows():
    from harness.report.markdown import run_times

    start = pd.Timestamp("2026-01-01T00:00:00Z")
    df = pd.DataFrame({"cell_id": ["a"] * 5 + ["b"] * 3, "wall_s": [10.0] * 5 + [20.0] * 3,
                       "started_at": [start] * 5 + [start + pd.Timedelta(seconds=10)] * 3})
    assert run_times(df) == (30.0, 30.0)  # not 110 s: each cell counted once


def test_readme_report_lands_outside_tracked_files(tmp_path):
    """README command 1's report step on a clean clone: nothing tracked changes (the committed
    example is regenerated only with an explicit --out)."""
    import shutil
    import subprocess
    import sys

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    table = clone / "results" / "quickstart"
    table.mkdir(parents=True)
    shutil.copy(REPO / "reports" / "quickstart" / "results.parquet", table / "results.parquet")
    # the code under test (this checkout's); the clone is the user's folder
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.argv = ['harness', 'sweep', 'quickstart']; "
            "from harness.cli import app; app()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=clone, capture_output=True, text=True,
                          timeout=300)  # every cell is restored from the table: nothing runs but the report
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "report: results/quickstart/report/report.md" in " ".join(proc.stderr.split())
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout
    assert not status.strip(), status  # results/ is ignored: no tracked change, nothing untracked
