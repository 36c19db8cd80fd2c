"""Serial, process-pool and Ray executors produce the same table (wall times aside)."""
from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

import tests.helpers_tasks  # noqa: F401  (registers the "toy" task)
from harness.sweep import expand_cells, load_suite
from harness.sweep.driver import run_sweep
from harness.sweep.store import load_results

# a real task (analytic, through the lead's models) and the toy task, with one failing cell
SUITE = """\
name: mixed
task_modules: [tests.helpers_tasks]
task:
  - name: toy
    params: {behavior: raise, bad_seeds: [1]}
  - analytic
model: {n_layers: 2, d_model: 32, n_heads: 2}
axes:
  variant: [gla]
  layout: [pure, "1:1"]
  seq_len: [64]
  seed: [0, 1]
"""
TIMING = ["wall_s", "started_at"]


def run(tmp_path: Path, out: str, **kw) -> pd.DataFrame:
    path = tmp_path / "mixed.yaml"
    path.write_text(textwrap.dedent(SUITE))
    suite = load_suite(path)
    cells = expand_cells(suite)
    summary = run_sweep(suite.name, cells, tmp_path / out, console=Console(file=io.StringIO()), progress=False, **kw)
    assert summary.n_cells == len(cells) == 8
    assert sum(summary.ran.values()) == 8
    assert len(summary.not_ok) == 2  # the toy cells with seed 1
    return load_results(tmp_path / out)


@pytest.fixture(scope="module")
def serial_table(tmp_path_factory) -> pd.DataFrame:
    tmp = tmp_path_factory.mktemp("serial")
    return run(tmp, "serial", executor="serial")


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING))


def test_serial_table_is_complete(serial_table):
    assert set(serial_table["status"]) == {"ok", "failed"}
    assert serial_table["cell_id"].nunique() == 8
    assert (serial_table["task"] == "analytic").sum() > 0


@pytest.mark.timeout(90)
def test_pool_matches_serial(tmp_path, serial_table):
    assert_same(run(tmp_path, "pool", executor="pool", workers=2), serial_table)


# ~20 s on an idle 2-core machine (starting Ray dominates); the limit leaves room for a busy one
@pytest.mark.timeout(400)
def test_ray_matches_serial(tmp_path, serial_table):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'hybrid-attention-harness[ray]'")
    assert_same(run(tmp_path, "ray", executor="ray", workers=2), serial_table)


@pytest.mark.timeout(90)
def dying_worker_suite(tmp_path: Path, name: str, sleep_s: float = 0.0):
    """Four toy cells (seeds 0-3); seed 1 kills its worker process at once."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        task_modules: [tests.helpers_tasks]
        task: toy
        params: {{behavior: exit, bad_seeds: [1], sleep_s: {sleep_s}}}
        model: {{n_layers: 2, d_model: 32, n_heads: 2}}
        axes: {{variant: gla, seed: [0, 1, 2, 3]}}
        """))
    return load_suite(path)


def test_a_dying_worker_fails_only_its_own_cell(tmp_path):
    """Two workers: seed 1 kills its worker while seed 0 runs beside it. The broken pool makes
    both look dead; each runs again alone, and only seed 1 gets the failed row."""
    suite = dying_worker_suite(tmp_path, "die2", sleep_s=1.0)
    summary = run_sweep(suite.name, expand_cells(suite), tmp_path / "res", executor="pool", workers=2,
                        console=Console(file=io.StringIO()), progress=False)
    df = load_results(tmp_path / "res")
    status = df.groupby("seed")["status"].first()
    assert status[1] == "failed" and {status[0], status[2], status[3]} == {"ok"}, status
    assert "running this cell alone" in df.loc[df["seed"] == 1, "error"].iloc[0]
    assert len(summary.not_ok) == 1


def test_pool_survives_a_dying_worker(tmp_path):
    suite = dying_worker_suite(tmp_path, "die")
    cells = expand_cells(suite)
    summary = run_sweep(suite.name, cells, tmp_path / "res", executor="pool", workers=1,
                        console=Console(file=io.StringIO()), progress=False)
    df = load_results(tmp_path / "res")
    assert df["cell_id"].nunique() == 4
    status = df.groupby("seed")["status"].first()
    assert status[1] == "failed" and {status[0], status[2], status[3]} == {"ok"}
    assert "worker process died" in df.loc[df["seed"] == 1, "error"].iloc[0]
    assert len(summary.not_ok) == 1


def test_a_worker_dying_between_two_submissions_fails_only_its_own_cell(tmp_path, monkeypatch):
    """The pool can break after a wait and before the next submit (a worker died meanwhile): the
    submit then raises BrokenProcessPool. Seen once under load; forced here with a stand-in pool
    whose seed-1 worker dies while seed 0 finishes, and whose death is seen only later."""
    import threading
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from harness.sweep import executors
    from harness.sweep.run_cell import execute_cell as run_cell

    class DyingPool:
        def __init__(self, *a, **kw):
            self.broken = False

        def submit(self, fn, cell, ctx):
            if self.broken:
                raise BrokenProcessPool("a child process terminated abruptly")
            fut: Future = Future()
            if cell.seed == 1:  # its worker dies; the pool notices a moment later
                self.broken = True
                threading.Timer(0.3, fut.set_exception, [BrokenProcessPool("died")]).start()
            else:
                fut.set_result(run_cell(cell, ctx))
            return fut

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(executors.PoolExecutor, "_new_pool", lambda self: DyingPool())
    suite = dying_worker_suite(tmp_path, "die3")
    summary = run_sweep(suite.name, expand_cells(suite), tmp_path / "res", executor="pool", workers=2,
                        console=Console(file=io.StringIO()), progress=False)
    status = load_results(tmp_path / "res").groupby("seed")["status"].first()
    assert status[1] == "failed" and {status[0], status[2], status[3]} == {"ok"}, status
    assert len(summary.not_ok) == 1
