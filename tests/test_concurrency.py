"""Sweeps sharing one results folder: each cell is computed once (claims), stale claims of a
killed sweep are taken over, shards partition a suite, and a sweep killed over and over still
ends with every cell exactly once and the values of a clean run."""
from __future__ import annotations

import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from harness.sweep import expand_cells, load_results, load_suite
from harness.sweep.driver import run_sweep
from harness.sweep.locks import CLAIMS_DIR, Claims

REPO = Path(__file__).resolve().parents[1]


def toy_suite(tmp: Path, n: int, sleep_s: float, log: Path, name: str = "conc", file: str = "") -> Path:
    """A suite of `n` toy cells that sleep `sleep_s` each and log their starts to `log`."""
    path = tmp / (file or f"{name}.yaml")
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        task_modules: [tests.helpers_tasks]
        task: toy
        params: {{sleep_s: {sleep_s}, log: {str(log)!r}}}
        model: {{n_layers: 2, d_model: 32, n_heads: 2}}
        axes: {{variant: gla, seq_len: [{', '.join(str(16 * (i + 1)) for i in range(n))}]}}
        """))
    return path


def sweep_process(suite: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(suite), "--out", str(out),
                             "--no-report", *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "COLUMNS": "200"})


def runs(log: Path) -> Counter:
    return Counter(line.split()[0] for line in log.read_text().splitlines()) if log.exists() else Counter()


@pytest.mark.timeout(300)
def test_two_sweeps_into_one_folder_compute_each_cell_once(tmp_path):
    log = tmp_path / "runs.log"
    suite = toy_suite(tmp_path, 10, 0.4, log)
    a, b = sweep_process(suite, tmp_path / "res"), sweep_process(suite, tmp_path / "res")
    outs = [p.communicate(timeout=240)[0] for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    assert set(runs(log).values()) == {1} and len(runs(log)) == 10, runs(log)  # each cell once, all of them
    assert load_results(tmp_path / "res")["cell_id"].nunique() == 10
    assert any("claimed by another sweep" in " ".join(o.split()) for o in outs)  # they shared the work


def test_a_dead_sweeps_claim_is_taken_over_and_a_live_one_is_left(tmp_path):
    log = tmp_path / "runs.log"
    cells = expand_cells(load_suite(toy_suite(tmp_path, 3, 0.0, log)))
    res = tmp_path / "res"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claims = res / CLAIMS_DIR
    claims.mkdir(parents=True)
    me = socket.gethostname()
    (claims / f"{cells[0].cell_id}.claim").write_text(json.dumps({"host": me, "pid": int(dead.stdout)}))
    (claims / f"{cells[1].cell_id}.claim").write_text(json.dumps({"host": "another-machine", "pid": 1}))
    summary = run_sweep("conc", cells, res, console=Console(file=io.StringIO()), progress=False)
    assert summary.elsewhere == [cells[1].cell_id]  # fresh heartbeat on another machine: its holder runs it
    assert set(runs(log)) == {cells[0].cell_id, cells[2].cell_id}  # the dead process's claim was taken over
    os.utime(claims / f"{cells[1].cell_id}.claim", (time.time() - 1000, time.time() - 1000))  # no heartbeat
    summary = run_sweep("conc", cells, res, console=Console(file=io.StringIO()), progress=False)
    assert not summary.elsewhere and runs(log)[cells[1].cell_id] == 1
    assert not list(claims.glob("*.claim"))  # every claim released


def test_claims_are_exclusive_and_heartbeat(tmp_path):
    a, b = Claims(tmp_path, heartbeat_s=0.05), Claims(tmp_path)
    b.me = {**b.me, "pid": os.getppid()}  # another sweep: a live process of this machine that is not us
    with a:
        assert a.claim("abc") and a.claim("abc")
        assert not b.claim("abc")
        before = (tmp_path / CLAIMS_DIR / "abc.claim").stat().st_mtime
        time.sleep(0.3)
        assert (tmp_path / CLAIMS_DIR / "abc.claim").stat().st_mtime > before  # the heartbeat touched it
    assert not (tmp_path / CLAIMS_DIR / "abc.claim").exists()  # released on exit
    assert b.claim("abc")


def test_shards_partition_a_suite(tmp_path):
    log = tmp_path / "runs.log"
    suite = toy_suite(tmp_path, 12, 0.0, log)
    cells = expand_cells(load_suite(suite))
    for i in range(3):
        run_sweep("conc", cells, tmp_path / "res", console=Console(file=io.StringIO()), progress=False, shard=(i, 3))
        assert 0 < len(runs(log)) <= 12
    assert set(runs(log).values()) == {1} and len(runs(log)) == 12


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_sweep_killed_again_and_again_ends_complete_and_exact(tmp_path):
    """>= 10 SIGKILLs at random moments, then a run to completion: every cell once in the table,
    nothing duplicated or unreadable, values equal to a clean run's on non-timing metrics."""
    rng = random.Random(0)
    log = tmp_path / "runs.log"
    suite = toy_suite(tmp_path, 24, 0.15, log, name="torture")
    res = tmp_path / "res"
    kills = 0
    while kills < 12:
        proc = sweep_process(suite, res, *(["--workers", "2"] if kills % 3 == 1 else []))
        time.sleep(rng.uniform(0.8, 2.5))
        if proc.poll() is not None:
            break  # finished before the kill: the suite is done
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        kills += 1
    final = sweep_process(suite, res)
    out = final.communicate(timeout=300)[0]
    assert final.returncode == 0, out
    assert kills >= 10
    df = load_results(res)
    per_cell = df.groupby("cell_id")["metric"].apply(list)
    assert len(per_cell) == 24 and all(sorted(m) == ["toy_latency_s", "toy_value"] for m in per_cell)
    clean = tmp_path / "clean"
    run_sweep("torture", expand_cells(load_suite(suite)), clean, console=Console(file=io.StringIO()), progress=False)
    key = ["cell_id", "metric", "context_len", "subtask"]
    a = df.set_index(key)["value"].sort_index()
    b = load_results(clean).set_index(key)["value"].sort_index()
    pd.testing.assert_series_equal(a, b)
    assert pd.read_parquet(res / "results.parquet")["cell_id"].nunique() == 24
