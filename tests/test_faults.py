"""The fault corpus: bad input, damaged or foreign results, unwritable folders and signals.

Every case ends in a short message naming the problem (never a traceback), with the documented
exit code (docs/suites.md: 0 ok, 1 some cell not ok, 2 bad suite / arguments / results folder,
128 + signal when interrupted), and no result is ever lost or changed by a command that only
reads. Suites are tiny (the instant `analytic` task, or the test-only `toy` task), so the whole
file runs in well under a minute.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import tests.helpers_tasks  # noqa: F401  (registers the "toy" task)
from harness.cli import app
from harness.sweep.store import RESULTS_FILE, cells_dir, load_results

REPO = Path(__file__).resolve().parent.parent
MODEL = "model: {n_layers: 2, d_model: 32, n_heads: 2}"


def tiny(tmp: Path, axes: str = "seq_len: [64, 128]", name: str = "tiny", extra: str = "") -> Path:
    """A suite of the instant analytic task: one cell per seq_len."""
    path = tmp / f"{name}.yaml"
    path.write_text(f"name: {name}\ntask: analytic\n{MODEL}\naxes: {{variant: gla, {axes}}}\n{extra}")
    return path


def cli(*args: str, env: dict | None = None) -> tuple[int, str]:
    """Run the command line in-process: (exit code, output with whitespace collapsed, so that
    a message wrapped by the console still matches)."""
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, " ".join(result.output.split())


def snapshot(d: Path) -> dict[str, tuple[str, int]]:
    """Every file under `d`: relative path -> (sha256, mtime_ns). Equal snapshots: nothing was
    written, moved, renamed or deleted."""
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file()}


def assert_message(code: int, out: str, want_code: int, fragment: str) -> None:
    assert code == want_code, out
    assert fragment in out, out
    assert "Traceback" not in out, out


def finished_tiny_results(tmp_path_factory) -> Path:
    """A finished results folder of the tiny suite (copy it before changing it)."""
    tmp = tmp_path_factory.mktemp("done")
    code, out = cli("sweep", str(tiny(tmp)), "--out", str(tmp / "res"), "--no-report")
    assert code == 0, out
    return tmp / "res"


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    return finished_tiny_results(tmp_path_factory)


def copy_of(done: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "res"
    shutil.copytree(done, dst)
    return dst


def damage_one_cell(res: Path) -> Path:
    cell = sorted(cells_dir(res).glob("*.parquet"))[0]
    cell.write_bytes(b"not parquet at all")
    return cell


# ---------------------------------------------------------------------------------------------
# Bad input and arguments: exit 2, one message, nothing run


def _bad_suite(kind: str, tmp: Path) -> Path:
    if kind == "long name":
        return _write(tmp, "long.yaml", f"name: {'a' * 300}\ntask: analytic\n{MODEL}\naxes: {{variant: gla}}\n")
    if kind == "binary":
        p = tmp / "binary.yaml"
        p.write_bytes(bytes(range(256)) * 4)
        return p
    if kind == "int64 axis":
        return tiny(tmp, axes="seq_len: [100000000000000000000]")
    if kind == "int64 param":
        return _write(tmp, "p.yaml",
                      f"name: p\ntask: analytic\n{MODEL}\nparams: {{context_lens: [-100000000000000000000]}}\n")
    if kind == "skip_invalid drops all":
        return _write(tmp, "skip.yaml", "name: skip\nskip_invalid: true\ntask: analytic\n"
                      "model: {n_layers: 3, d_model: 32, n_heads: 2}\naxes: {variant: gla, layout: ['1:1']}\n")
    raise AssertionError(kind)


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("kind, fragment", [
    ("long name", "the suite name has 300 characters; at most 100"),
    ("binary", "not a text file (byte 128 is not UTF-8)"),
    ("int64 axis", "axes.seq_len[0]: the integer 100000000000000000000 is out of range"),
    ("int64 param", "params.context_lens[0]: the integer -100000000000000000000 is out of range"),
    ("skip_invalid drops all", "leaves no cell to run"),
])
def test_bad_suite_is_a_message(tmp_path, monkeypatch, kind, fragment):
    monkeypatch.chdir(tmp_path)  # the long name's default --out would be results/<name> here
    path = _bad_suite(kind, tmp_path)
    code, out = cli("sweep", str(path), "--no-report")
    assert_message(code, out, 2, fragment)
    assert not (tmp_path / "results").exists()  # nothing ran, nothing was created


@pytest.mark.parametrize("args, fragment", [
    (["sweep", "{suite}", "--out", ""], "--out is empty: give a path; omit it for the default (results/<suite-name>)"),
    (["sweep", "{suite}", "--out", "{file}"], "is a file, not a directory"),
    (["sweep", "{suite}", "--out", "{file}", "--dry-run"], "is a file, not a directory"),
    (["report", "{done}", "--out", ""], "--out is empty"),
    (["report", ""], "the results path is empty"),
    (["report", "{tmp}/nowhere"], "no results at"),
])
def test_bad_arguments_are_a_message(tmp_path, monkeypatch, done, args, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    fill = {"suite": str(tiny(tmp_path)), "file": str(tmp_path / "afile"), "done": str(done), "tmp": str(tmp_path)}
    before = snapshot(tmp_path)
    code, out = cli(*(a.format(**fill) for a in args), "--no-report" if args[0] == "sweep" else "--debug")
    assert_message(code, out, 2, fragment)
    assert snapshot(tmp_path) == before  # in particular, nothing written into the current folder


def test_unexpected_error_is_short_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    import harness.sweep.driver

    def boom(*a, **k):
        raise ZeroDivisionError("an internal bug")

    monkeypatch.setattr(harness.sweep.driver, "run_sweep", boom)
    suite = str(tiny(tmp_path))
    code, out = cli("sweep", suite, "--out", str(tmp_path / "r"), "--no-report")
    assert_message(code, out, 2, "ZeroDivisionError: an internal bug")
    assert "--debug or HARNESS_DEBUG=1" in out
    for extra, env in (([], {"HARNESS_DEBUG": "1"}), (["--debug"], None)):
        code, out = cli("sweep", suite, "--out", str(tmp_path / "r"), "--no-report", *extra, env=env)
        assert code == 2 and "Traceback" in out and "ZeroDivisionError" in out


# ---------------------------------------------------------------------------------------------
# Foreign or unreadable tables: refused, never overwritten


def _foreign(path: Path) -> None:
    pd.DataFrame({"a": [1, 2, 3, 4, 5], "b": [1.0] * 5, "c": list("abcde")}).to_parquet(path)


def _garbage(path: Path) -> None:
    path.write_bytes(b"PAR1 but not really")


@pytest.mark.parametrize("make, fragment", [
    (_foreign, "is not a results table written by this harness: it has no cell_id, metric, value, status columns"),
    (_garbage, "cannot be read as a parquet table"),
])
def test_sweep_refuses_a_foreign_results_table(tmp_path, make, fragment):
    out_dir = tmp_path / "res"
    out_dir.mkdir()
    make(out_dir / RESULTS_FILE)
    before = snapshot(out_dir)
    code, out = cli("sweep", str(tiny(tmp_path)), "--out", str(out_dir), "--no-report")
    assert_message(code, out, 2, fragment)
    assert "move it away or choose another --out" in out
    assert snapshot(out_dir) == before  # not overwritten, and no cells/ beside it


@pytest.mark.parametrize("make, fragment", [
    (_foreign, "is not a results table written by this harness"),
    (_garbage, "cannot be read as a parquet table"),
])
def test_report_on_a_foreign_table_says_so(tmp_path, make, fragment):
    make(tmp_path / "t.parquet")
    code, out = cli("report", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "rep"))
    assert_message(code, out, 2, fragment)
    assert "non-ok" not in out and "the results are saved" not in out
    assert not (tmp_path / "rep").exists()


def test_report_without_results_does_not_say_they_are_saved(tmp_path):
    (tmp_path / "empty").mkdir()
    code, out = cli("report", str(tmp_path / "empty"), "--out", str(tmp_path / "rep"))
    assert_message(code, out, 2, "no results in")
    assert "the results are saved" not in out


# ---------------------------------------------------------------------------------------------
# Damaged cell files: reading changes nothing, the sweep restores from results.parquet


@pytest.mark.parametrize("command", ["report", "dry-run", "load_results"])
def test_reading_a_damaged_folder_changes_nothing(tmp_path, done, command):
    res = copy_of(done, tmp_path)
    damage_one_cell(res)
    before = snapshot(res)
    if command == "load_results":
        with pytest.warns(UserWarning, match="using its rows from results.parquet"):
            df = load_results(res)
        pd.testing.assert_frame_equal(df, load_results(done))  # the consolidated copy's rows
    elif command == "dry-run":
        code, out = cli("sweep", str(tiny(tmp_path)), "--out", str(res), "--dry-run")
        assert code == 0 and "Traceback" not in out, out
    else:
        code, out = cli("report", str(res), "--out", str(tmp_path / "rep"))
        assert code == 0 and "Traceback" not in out, out
        assert "using its rows from results.parquet" in out
    assert snapshot(res) == before  # nothing renamed to .corrupt, results.parquet not rewritten


def test_sweep_restores_a_damaged_cell_instead_of_rerunning_it(tmp_path, done):
    res = copy_of(done, tmp_path)
    bad = damage_one_cell(res)
    code, out = cli("sweep", str(tiny(tmp_path)), "--out", str(res), "--no-report")
    assert code == 0 and "Traceback" not in out, out
    assert "restored its" in out and "2 of 2 cells already in" in out  # nothing re-run
    assert (bad.parent / (bad.name + ".corrupt")).read_bytes() == b"not parquet at all"  # kept
    pd.testing.assert_frame_equal(load_results(res), load_results(done))
    pd.testing.assert_frame_equal(pd.read_parquet(bad), pd.read_parquet(done / "cells" / bad.name))


def test_damaged_cell_without_a_copy_runs_again(tmp_path, done):
    res = copy_of(done, tmp_path)
    bad = damage_one_cell(res)
    (res / RESULTS_FILE).unlink()
    code, out = cli("sweep", str(tiny(tmp_path)), "--out", str(res), "--no-report")
    assert code == 0 and "Traceback" not in out, out
    assert "holds no copy of it" in out and "its cell runs again" in out
    assert (bad.parent / (bad.name + ".corrupt")).exists()
    assert load_results(res)["cell_id"].nunique() == 2


def test_a_lone_results_table_is_kept_not_overwritten(tmp_path, done):
    res = tmp_path / "res"
    res.mkdir()
    shutil.copy(done / RESULTS_FILE, res / RESULTS_FILE)
    more = tiny(tmp_path, axes="seq_len: [64, 128, 256]")  # one new cell
    code, out = cli("sweep", str(more), "--out", str(res), "--no-report")
    assert code == 0 and "Traceback" not in out, out
    assert "restored 2 cell(s) from results.parquet" in out and "2 of 3 cells already in" in out
    df = load_results(res)
    assert df["cell_id"].nunique() == 3
    old = load_results(done)
    pd.testing.assert_frame_equal(df[df["cell_id"].isin(old["cell_id"])].reset_index(drop=True), old)


def test_a_rerun_with_nothing_to_do_writes_nothing(tmp_path, done):
    res = copy_of(done, tmp_path)
    before = snapshot(res)
    code, out = cli("sweep", str(tiny(tmp_path)), "--out", str(res), "--no-report")
    assert code == 0 and "2 of 2 cells already in" in out, out
    assert snapshot(res) == before


def test_a_failed_write_stops_the_sweep_with_a_message(tmp_path, monkeypatch):
    import harness.sweep.driver

    real = harness.sweep.driver.write_cell
    calls = []

    def full_disk(results_dir, cell_id, rows):
        calls.append(cell_id)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(results_dir, cell_id, rows)

    monkeypatch.setattr(harness.sweep.driver, "write_cell", full_disk)
    res = tmp_path / "res"
    code, out = cli("sweep", str(tiny(tmp_path, axes="seq_len: [64, 128, 256]")), "--out", str(res), "--no-report")
    assert_message(code, out, 2, "(the disk is full). The sweep stopped; the cells written before are saved")
    assert len(calls) == 2  # it stopped at the first failure
    assert load_results(res)["cell_id"].nunique() == 1 and (res / RESULTS_FILE).is_file()


def test_missing_local_checkpoint_is_not_an_online_problem(tmp_path):
    from harness.integrations.hub import (
        ConversionError,
        local_checkpoint_problem,
        resolve_checkpoint_dir,
    )

    missing = tmp_path / "no-such-checkpoint"
    assert "does not exist" in local_checkpoint_problem(str(missing))
    with pytest.raises(ConversionError, match="does not exist") as info:
        resolve_checkpoint_dir(missing)
    assert "HARNESS_ONLINE" not in str(info.value)
    assert "has no config.json" in local_checkpoint_problem(str(tmp_path))
    assert local_checkpoint_problem("owner/name") is None  # a Hub id: decided online


def test_lm_eval_suite_with_a_missing_checkpoint_says_it_does_not_exist(tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.delenv("HARNESS_ONLINE", raising=False)
    path = _write(tmp_path, "ev.yaml", "name: ev\ntask: lm_eval\n"
                  f"params: {{tasks: [harness_toy_mc], checkpoint: {str(tmp_path / 'gone')!r}}}\n")
    code, out = cli("sweep", str(path), "--out", str(tmp_path / "r"), "--no-report")
    assert_message(code, out, 2, "does not exist")
    assert "HARNESS_ONLINE" not in out


# ---------------------------------------------------------------------------------------------
# Real processes: unwritable folders (as an unprivileged user when the tests run as root) and
# SIGTERM


def _harness(*args: str, as_other: bool = False, timeout: float = 120) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "harness.cli", *args]
    if as_other:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    env = {**os.environ, "HOME": tempfile.gettempdir(), "COLUMNS": "200"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


@pytest.fixture
def readonly_dir() -> Callable[[], tuple[Path, bool]]:
    """A folder the command cannot write in: read-only (chmod) for a normal user; as root, which
    writes anywhere, the command runs as `nobody` in a folder it does not own."""
    root = os.geteuid() == 0
    if root and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only")
    if root:  # nobody must be able to run this checkout (not so in a clone under a 0700 folder)
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                                "import harness.cli"], cwd=REPO, capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"user nobody cannot run this checkout's python: {probe.stderr.strip()[-200:]}")
    made: list[Path] = []

    def make() -> tuple[Path, bool]:
        d = Path(tempfile.mkdtemp(prefix="harness-ro-"))
        d.chmod(0o755)
        made.append(d)
        return d, root

    yield make
    for d in made:
        for p in [d, *d.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(d, ignore_errors=True)


def _lock(d: Path, root: bool) -> None:
    for p in [d, *d.rglob("*")]:
        if root:
            p.chmod(0o755 if p.is_dir() else 0o644)  # readable by nobody, writable by root only
        else:
            p.chmod(0o555 if p.is_dir() else 0o444)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["no-op rerun", "cells to run", "new --out under it"])
def test_unwritable_results_folder(readonly_dir, case):
    d, root = readonly_dir()
    suite = tiny(d)
    res = d / "res"
    code, out = _harness("sweep", str(suite), "--out", str(res), "--no-report")
    assert code == 0, out
    if case == "cells to run":
        suite = tiny(d, axes="seq_len: [64, 128, 256]")
    _lock(d, root)
    before = snapshot(d)
    target = d / "new" / "sub" if case == "new --out under it" else res
    code, out = _harness("sweep", str(suite), "--out", str(target), "--no-report", as_other=root)
    assert "Traceback" not in out, out
    if case == "no-op rerun":
        assert code == 0 and "2 of 2 cells already in" in out, out
    elif case == "cells to run":
        assert_message(code, out, 2, "cannot write in the results directory")
        assert "choose a writable --out" in out
    else:
        assert_message(code, out, 2, "cannot create the results directory")
    assert snapshot(d) == before  # nothing written, nothing lost


@pytest.mark.timeout(120)
def test_sigterm_interrupts_like_ctrl_c(tmp_path):
    """A scheduler's `timeout` sends SIGTERM: message, finished cells kept and consolidated, 143."""
    path = _write(tmp_path, "slow.yaml", textwrap.dedent(f"""\
        name: slow
        task_modules: [tests.helpers_tasks]
        task: toy
        params: {{sleep_s: 0.3}}
        {MODEL}
        axes: {{variant: gla, seq_len: [{', '.join(str(64 * (i + 1)) for i in range(20))}]}}
        """))
    res = tmp_path / "res"
    cmd = [sys.executable, "-m", "harness.cli", "sweep", str(path), "--out", str(res), "--no-report"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(list(cells_dir(res).glob("*.parquet"))) < 2:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = " ".join(out.split())
    assert proc.returncode == 143, out
    assert "interrupted (SIGTERM): finished cells are saved" in out and "Traceback" not in out, out
    n = len(list(cells_dir(res).glob("*.parquet")))
    assert 2 <= n < 20
    table = pd.read_parquet(res / RESULTS_FILE)  # consolidated on the way out
    assert table["cell_id"].nunique() == n and set(table["status"]) == {"ok"}


def test_provenance_never_takes_the_checkouts_git_index_lock(monkeypatch):
    """`git status` may take .git/index.lock to refresh the index, colliding with the user's own
    git commands while a sweep starts: the sweep's sha lookup runs git with --no-optional-locks."""
    import harness.sweep.run_cell as run_cell

    calls = []
    real = subprocess.run

    def spy(args, *a, **k):
        calls.append(list(args))
        return real(args, *a, **k)

    monkeypatch.setattr(run_cell.subprocess, "run", spy)
    run_cell.git_sha.cache_clear()
    run_cell.git_sha()
    run_cell.git_sha.cache_clear()
    status = [c for c in calls if "status" in c]
    assert status and all("--no-optional-locks" in c for c in status)
