"""The Ray executor on a multi-node cluster (`harness sweep --executor ray --address ...`), as a
user who outgrew one machine runs it: a cluster of two worker nodes (one CPU each) and a head
with none, all on this machine (`ray.cluster_utils.Cluster`), and the sweep's driver in its own
process.

- A worker node dies mid-sweep: the sweep finishes on the other node; the cell that was running
  on the dead node is stored as a failed row (NodeDiedError: `max_retries=0`, so Ray does not
  rerun it silently) and `--retry-failed` runs it again. Every cell ends stored exactly once,
  with the values of a serial run.
- The driver is killed (SIGKILL) mid-sweep and started again against the same cluster: the
  rerun skips the stored cells, takes over the dead driver's claims at once and finishes.

Cells are the test-only `toy` task sleeping 2 s (no CPU work: the machine may have two cores),
so that cells are in flight when something dies. Slow (about two minutes): Ray starts three
raylets.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from harness.sweep import expand_cells, load_results, load_suite
from harness.sweep.driver import run_sweep
from harness.sweep.store import RESULTS_FILE, cells_dir
from tests.test_concurrency import toy_suite

REPO = Path(__file__).resolve().parents[1]
N_CELLS = 8
SLEEP_S = 2.0
VALUES = ["task", "variant", "layout", "seq_len", "seed", "metric", "value", "unit", "status"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _suite(tmp: Path, log: Path, sleep_s: float = SLEEP_S, name: str = "cluster") -> Path:
    """N_CELLS toy cells that sleep `sleep_s` each (its own file per sleep, in one folder)."""
    return toy_suite(tmp, N_CELLS, sleep_s, log, name=name, file=f"{name}-{sleep_s}.yaml")


@dataclass
class Nodes:
    cluster: Any  # ray.cluster_utils.Cluster
    workers: list  # its worker nodes (the head has no CPU: cells run on these only)

    @property
    def address(self) -> str:
        return self.cluster.address

    def ensure_two_workers(self) -> None:
        alive = [w for w in self.workers if w in self.cluster.list_all_nodes()]
        self.workers = alive + [self.cluster.add_node(num_cpus=1) for _ in range(2 - len(alive))]
        self.cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'hybrid-attention-harness[ray]'")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = Nodes(c, [])
        nodes.ensure_two_workers()
        yield nodes
    finally:
        c.shutdown()


def _sweep(suite: Path, out: Path, address: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "harness.cli", "sweep", str(suite), "--executor", "ray", "--address", address,
           "--out", str(out), "--no-report", *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})


def _parent(pid: int) -> int | None:
    """The parent of a live process (a Ray worker's parent is its node's raylet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[1])


def _raylet(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def _starts(log: Path) -> list[tuple[str, int]]:
    """(cell_id, worker pid) of every cell start the toy task logged, in order."""
    return [(line.split()[0], int(line.split()[1])) for line in log.read_text().splitlines()] if log.exists() else []


def _serial_values(tmp: Path) -> pd.DataFrame:
    """The same cells without the sleep (a parameter, so other cell ids: compare values)."""
    cells = expand_cells(load_suite(_suite(tmp, tmp / "serial.log", sleep_s=0.0)), [])
    summary = run_sweep("cluster", cells, tmp / "serial", console=Console(file=io.StringIO()), progress=False)
    assert summary.exit_code == 0
    return _values(summary.table)


def _values(df: pd.DataFrame) -> pd.DataFrame:
    return df[VALUES].sort_values(["seq_len", "metric"]).reset_index(drop=True)


def _assert_complete(res: Path, serial: pd.DataFrame) -> None:
    """Every cell stored exactly once, all ok, with the serial run's values; the table agrees."""
    files = list(cells_dir(res).glob("*.parquet"))
    table = pd.read_parquet(res / RESULTS_FILE)
    assert len(files) == N_CELLS == table["cell_id"].nunique()
    assert not table.duplicated(["cell_id", "metric"]).any()
    assert set(table["status"]) == {"ok"}
    pd.testing.assert_frame_equal(_values(table), serial)
    pd.testing.assert_frame_equal(table, load_results(res))


def test_a_worker_node_dies_mid_sweep(cluster, tmp_path):
    serial = _serial_values(tmp_path)
    log, res = tmp_path / "runs.log", tmp_path / "res"
    suite = _suite(tmp_path, log)
    cluster.ensure_two_workers()
    doomed, survivor = cluster.workers
    dead_raylet, live_raylet = _raylet(doomed), _raylet(survivor)
    raylet_of: dict = {}
    t0 = time.monotonic()
    proc = _sweep(suite, res, cluster.address)
    killed_at, in_flight, seen = None, None, 0
    while proc.poll() is None and time.monotonic() - t0 < 300:
        starts = _starts(log)
        for _, pid in starts:
            raylet_of.setdefault(pid, _parent(pid))
        on = Counter(raylet_of[pid] for _, pid in starts)
        # kill the node as soon as its second cell starts (its first is stored), once the other
        # node has run one too: that second cell is in flight (it sleeps SLEEP_S)
        new = starts[seen:]
        seen = len(starts)
        if killed_at is None and on[live_raylet] and on[dead_raylet] >= 2 and \
                any(raylet_of[pid] == dead_raylet for _, pid in new):
            in_flight = next(cid for cid, pid in reversed(new) if raylet_of[pid] == dead_raylet)
            cluster.cluster.remove_node(doomed, allow_graceful=False)
            killed_at = time.monotonic() - t0
        time.sleep(0.1)
    out = proc.communicate(timeout=120)[0]
    first_s = time.monotonic() - t0
    assert killed_at is not None, out
    assert proc.returncode == 1, out  # the cell on the dead node is a failed row; the others are ok
    table = load_results(res)
    assert table["cell_id"].nunique() == N_CELLS, out  # the sweep finished on the other node
    failed = table.loc[table["status"] != "ok", ["cell_id", "error"]].drop_duplicates("cell_id")
    assert in_flight in set(failed["cell_id"]), (failed, out)
    assert all("NodeDiedError" in e or "died" in e for e in failed["error"]), failed
    per_node = {"dead node": on[dead_raylet], "surviving node": on[live_raylet]}

    t1 = time.monotonic()
    retry = _sweep(suite, res, cluster.address, "--retry-failed")
    out = retry.communicate(timeout=240)[0]
    assert retry.returncode == 0, out
    assert f"{N_CELLS - len(failed)} of {N_CELLS} cells already in" in out, out
    _assert_complete(res, serial)
    runs = Counter(cid for cid, _ in _starts(log))
    assert set(runs) == set(table["cell_id"]) and runs[in_flight] == 2, runs
    assert sum(runs.values()) <= N_CELLS + len(failed), runs  # only the failed cells ran again
    print(f"\ncluster node death: cells started per node {per_node}, killed at {killed_at:.1f} s, "
          f"first sweep {first_s:.1f} s, failed rows {len(failed)}, reruns {sum(runs.values()) - N_CELLS}, "
          f"retry {time.monotonic() - t1:.1f} s")


def test_a_killed_driver_restarts_against_the_same_cluster(cluster, tmp_path):
    serial = _serial_values(tmp_path)
    log, res = tmp_path / "runs.log", tmp_path / "res"
    suite = _suite(tmp_path, log)
    cluster.ensure_two_workers()  # the other test removed one
    t0 = time.monotonic()
    proc = _sweep(suite, res, cluster.address)
    while proc.poll() is None and time.monotonic() - t0 < 300 and len(list(cells_dir(res).glob("*.parquet"))) < 2:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)  # no clean-up at all: claims stay, tasks in flight are lost
    proc.communicate(timeout=60)
    stored = len(list(cells_dir(res).glob("*.parquet")))
    claims = [json.loads(p.read_text()) for p in (res / "claims").glob("*.claim")]
    assert 2 <= stored < N_CELLS and claims, (stored, claims)  # it died mid-sweep, holding claims

    again = _sweep(suite, res, cluster.address)
    out = again.communicate(timeout=240)[0]
    assert again.returncode == 0, out
    assert f"{stored} of {N_CELLS} cells already in" in out, out  # none left "claimed by another sweep"
    _assert_complete(res, serial)
    assert not list((res / "claims").glob("*.claim"))
    runs = Counter(cid for cid, _ in _starts(log))
    print(f"\ncluster driver kill: {stored} cells stored before the kill, {len(claims)} claims left, "
          f"reruns {sum(runs.values()) - N_CELLS}, total {time.monotonic() - t0:.1f} s")
