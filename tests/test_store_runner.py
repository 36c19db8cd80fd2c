"""The results store and the runner: schema, failure rows, resume, retry, and a real SIGKILL."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

import harness
import tests.helpers_tasks  # noqa: F401  (registers the "toy" task)
from harness.cli import app
from harness.sweep import expand_cells, find_suite, load_suite
from harness.sweep.driver import run_sweep
from harness.sweep.results import COLUMN_NAMES, DTYPES
from harness.sweep.store import RESULTS_FILE, cell_path, cells_dir, load_results, write_cell

REPO = Path(__file__).resolve().parent.parent


def toy_suite(tmp_path: Path, params: str = "{}", axes: str = "seq_len: [64, 128]", name: str = "toy") -> Path:
    """A suite of the test-only `toy` task; `axes` is YAML flow-mapping content."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        task_modules: [tests.helpers_tasks]
        task: toy
        params: {params}
        model: {{n_layers: 2, d_model: 32, n_heads: 2}}
        axes: {{variant: gla, {axes}}}
        """))
    return path


def sweep(path: Path, out: Path, **kw):
    suite = load_suite(path)
    cells = expand_cells(suite)
    console = Console(file=io.StringIO(), width=200)
    return run_sweep(suite.name, cells, out, console=console, progress=False, **kw), cells


def test_table_has_schema_columns_and_provenance(tmp_path):
    summary, cells = sweep(toy_suite(tmp_path), tmp_path / "res")
    assert summary.ok and summary.ran["ok"] == 2
    df = pd.read_parquet(tmp_path / "res" / RESULTS_FILE)  # plain pandas, as a user would
    assert list(df.columns) == COLUMN_NAMES
    df = harness.load_results(tmp_path / "res")
    assert {c: str(t) for c, t in df.dtypes.items()} == DTYPES
    assert len(df) == 4 and set(df["status"]) == {"ok"}
    row = df[(df["metric"] == "toy_latency_s") & (df["seq_len"] == 64)].iloc[0]
    assert row["context_len"] == 64 and row["subtask"] == "decode" and row["n_repeats"] == 3 and row["spread"] == 0
    assert pd.isna(df.loc[df["metric"] == "toy_value", "context_len"]).all()  # optional column -> NA
    assert row["suite"] == "toy" and row["variant"] == "gla" and row["layout"] == "pure"
    assert row["n_layers"] == 2 and row["n_full_attn_layers"] == 0 and row["d_model"] == 32
    assert row["device"] == "cpu" and row["dtype"] == "float32" and row["backend"] == "auto"
    assert row["torch_version"] and row["harness_version"] and row["git_sha"]
    assert row["started_at"].tzinfo is not None and row["wall_s"] >= 0
    assert set(df["cell_id"]) == {c.cell_id for c in cells}
    # the parquet file and the directory load the same table
    pd.testing.assert_frame_equal(load_results(tmp_path / "res" / RESULTS_FILE), df)


def test_cell_write_is_atomic_and_leaves_no_temp(tmp_path):
    rows = [{"suite": "s", "cell_id": "abc", "metric": "m", "value": 1.0, "unit": "s", "status": "ok"}]
    path = write_cell(tmp_path, "abc", rows)
    assert path == cell_path(tmp_path, "abc")
    assert [p.name for p in cells_dir(tmp_path).iterdir()] == ["abc.parquet"]
    write_cell(tmp_path, "abc", [{**rows[0], "value": 2.0}])  # replace, not append
    assert load_results(tmp_path)["value"].tolist() == [2.0]
    with pytest.raises(ValueError, match="not in the results schema"):
        write_cell(tmp_path, "abc", [{**rows[0], "colour": "red"}])
    assert load_results(tmp_path)["value"].tolist() == [2.0]  # the old file survived the failure
    assert not list(cells_dir(tmp_path).glob(".*"))


def test_failure_rows_and_the_sweep_goes_on(tmp_path):
    path = toy_suite(tmp_path, axes="params.behavior: [ok, raise, nan, oom, bad_row, bad_value]")
    summary, cells = sweep(path, tmp_path / "res")
    assert summary.ran == {"ok": 1, "failed": 3, "diverged": 1, "oom": 1}
    assert not summary.ok and len(summary.not_ok) == 5
    df = load_results(tmp_path / "res")
    by = {b: df[df["params"].str.contains(f'"behavior":"{b}"')]
          for b in ("ok", "raise", "nan", "oom", "bad_row", "bad_value")}
    assert set(by["ok"]["status"]) == {"ok"}
    (raise_row,) = by["raise"].itertuples()
    assert raise_row.status == "failed" and pd.isna(raise_row.metric) and pd.isna(raise_row.value)
    assert raise_row.error.startswith("ValueError: toy failure at seq_len=1024 [at tests/helpers_tasks.py:")
    nan = by["nan"].set_index("metric")
    assert nan.loc["toy_value", "status"] == "diverged" and "non-finite value nan" in nan.loc["toy_value", "error"]
    assert nan.loc["toy_latency_s", "status"] == "ok"
    (oom_row,) = by["oom"].itertuples()
    assert oom_row.status == "oom" and "out of memory" in oom_row.error
    (bad_row,) = by["bad_row"].itertuples()
    assert bad_row.status == "failed" and "outside the results schema: ['colour']" in bad_row.error
    (bad_value,) = by["bad_value"].itertuples()
    assert bad_value.status == "failed" and "column 'context_len' must hold Int64 values" in bad_value.error


def test_cli_exits_nonzero_and_says_so_when_cells_fail(tmp_path):
    path = toy_suite(tmp_path, axes="params.behavior: [ok, raise]")
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "res"), "--no-report"])
    assert result.exit_code == 1, result.output
    assert "1 cell(s) not ok" in result.output and "--retry-failed" in result.output
    ok = CliRunner().invoke(app, ["sweep", str(toy_suite(tmp_path, name="fine")), "--out", str(tmp_path / "r2"),
                                  "--no-report"])
    assert ok.exit_code == 0, ok.output


def test_resume_skips_done_and_retry_failed_replaces(tmp_path):
    marker = tmp_path / "marker"
    path = toy_suite(tmp_path, params=f"{{fail_unless_exists: {str(marker)!r}, bad_seeds: [1]}}",
                     axes="seq_len: [64], seed: [0, 1]")
    # bad_seeds does not gate fail_unless_exists: both cells fail until the marker exists
    s1, cells = sweep(path, tmp_path / "res")
    assert s1.ran == {"failed": 2}
    marker.touch()
    s2, _ = sweep(path, tmp_path / "res")  # a plain rerun does not retry failures...
    assert s2.n_skipped == 2 and not s2.ran and len(s2.not_ok) == 2
    s3, _ = sweep(path, tmp_path / "res", retry_failed=True)  # ...--retry-failed does
    assert s3.ran == {"ok": 2} and s3.ok
    df = load_results(tmp_path / "res")
    assert len(df) == 4 and set(df["status"]) == {"ok"}  # the failed rows were replaced
    s4, _ = sweep(path, tmp_path / "res", retry_failed=True)
    assert s4.n_skipped == 2 and not s4.ran


def test_killed_sweep_resumes_with_every_cell_once(tmp_path):
    """SIGKILL a real `harness sweep` mid-run; the rerun completes, nothing lost or doubled."""
    seq = ", ".join(str(64 * (i + 1)) for i in range(12))
    path = toy_suite(tmp_path, params="{sleep_s: 0.4}", axes=f"seq_len: [{seq}]", name="slow")
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "harness.cli", "sweep", str(path), "--out", str(out), "--no-report"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(list(cells_dir(out).glob("*.parquet"))) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    written = list(cells_dir(out).glob("*.parquet"))
    assert 3 <= len(written) < 12, "the kill must land mid-sweep"
    for f in out.rglob("*.parquet"):  # every visible parquet file is complete and readable
        assert pq.read_table(f).num_rows > 0
    partial = load_results(out)  # loads everything finished before the kill
    assert partial["cell_id"].nunique() == len(written)

    summary, cells = sweep(path, out)
    assert summary.ok and summary.n_skipped == len(written)
    assert sum(summary.ran.values()) == 12 - len(written)
    df = load_results(out)
    assert len(cells) == 12
    assert sorted(df["cell_id"].unique()) == sorted(c.cell_id for c in cells)
    assert (df.groupby("cell_id").size() == 2).all()  # each cell's two rows, exactly once
    assert set(df["status"]) == {"ok"}
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_default_command_runs_quickstart_then_the_report(tmp_path, monkeypatch):
    import harness.report

    calls = []

    def fake_report(results_dir, out_dir=None):
        calls.append((Path(results_dir), out_dir))
        return Path(tmp_path / "report.md")

    monkeypatch.setattr(harness.report, "build_report", fake_report)
    monkeypatch.chdir(tmp_path)  # no suites/ here: the checkout's suites/quickstart.yaml is used
    result = CliRunner().invoke(app, ["sweep"])
    assert result.exit_code == 0, result.output
    df = load_results(tmp_path / "results" / "quickstart")
    expected = len(expand_cells(load_suite(find_suite("quickstart"))))
    assert df["cell_id"].nunique() == expected and set(df["status"]) == {"ok"}
    assert calls == [(Path("results/quickstart"), None)]
    assert "report:" in result.output
