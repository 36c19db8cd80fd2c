"""Per-cell claims: several sweeps into one results folder (two terminals, or several machines on a
shared file system, each with `--shard i/n` or not) never compute the same cell twice.

Before a sweep runs a cell it claims it: `<results>/claims/<cell_id>.claim`, a small JSON file
naming the holder (host, pid, when). A cell that is already stored, or claimed by a live holder,
is left to that holder; the sweep finishes the others and says how many it left. Claims are
created, checked and taken over under an exclusive lock on `claims/.lock` (fcntl.flock, held for
a few file operations), so two sweeps never both win one cell. A claim is released when the
cell's rows are stored, and all of a sweep's claims when it ends (even on Ctrl-C or SIGTERM).

Stale claims, left by a sweep that was killed (SIGKILL, a lost machine), are taken over: at
once when the holder is a process of this host that no longer exists, otherwise when its
heartbeat (the claim file's mtime, touched every `heartbeat_s` by a background thread) is older
than `stale_s`.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from harness.sweep.store import pid_alive

CLAIMS_DIR = "claims"
HEARTBEAT_S = 15.0
STALE_S = 120.0


class Claims:
    """The claims this sweep holds in one results folder (a context manager: heartbeat while
    inside, everything released on the way out)."""

    def __init__(self, results_dir: Path, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S):
        self.dir = Path(results_dir) / CLAIMS_DIR
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}
        self.held: set[str] = set()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _path(self, cell_id: str) -> Path:
        return self.dir / f"{cell_id}.claim"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def holder(self, cell_id: str) -> Optional[dict[str, Any]]:
        """Who holds the claim on `cell_id` (None: nobody, or a stale claim)."""
        path = self._path(cell_id)
        try:
            info = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return None
        if info.get("host") == self.me["host"] and not pid_alive(int(info.get("pid", -1))):
            return None  # a dead process of this machine
        if age > self.stale_s:
            return None  # no heartbeat for a while: a lost machine or a frozen process
        return info

    def claim(self, cell_id: str) -> bool:
        """Claim `cell_id` for this sweep; False when a live holder has it."""
        if cell_id in self.held:
            return True
        with self._locked():
            other = self.holder(cell_id)
            if other is not None and other != self.me:
                return False
            tmp = self.dir / f".{cell_id}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({**self.me, "since": time.time()}))
            os.replace(tmp, self._path(cell_id))  # over a stale claim, if there was one
        self.held.add(cell_id)
        return True

    def release(self, cell_id: str) -> None:
        if cell_id not in self.held:
            return
        self.held.discard(cell_id)
        with self._locked():
            try:
                info = json.loads(self._path(cell_id).read_text())
            except (OSError, ValueError):
                return
            if info.get("host") == self.me["host"] and info.get("pid") == self.me["pid"]:
                self._path(cell_id).unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            for cell_id in list(self.held):
                with contextlib.suppress(OSError):
                    os.utime(self._path(cell_id))

    def __enter__(self) -> "Claims":
        self._thread = threading.Thread(target=self._beat, daemon=True, name="claims-heartbeat")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for cell_id in list(self.held):
            with contextlib.suppress(OSError):
                self.release(cell_id)


def shard_of(cell_id: str, n: int) -> int:
    """The shard (0 .. n-1) a cell belongs to with `--shard i/n`: a stable hash of its id."""
    return int(cell_id[:8], 16) % n
