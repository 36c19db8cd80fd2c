"""Per-cell locks (claims): several sweeps into one results folder (two terminals, or several machines on a
shared file system, each with `--shard i/n` or not) never compute the same cell twice.

Before a sweep runs a cell it claims it: `<results>/claims/<cell_id>.claim`, a small JSON file
naming the holder (host, pid, when). A cell that is already stored, or claimed by a live holder,
is left to that holder; the sweep finishes the others and says how many it left. Claims are
created, checked and taken over under an exclusive lock on `claims/.lock` (fcntl.flock, held for
a few file operations), so two sweeps never both win one cell. A claim is released when the
cell's rows are stored, and all of a sweep's claims when it ends (even on Ctrl-C or SIGTERM).

Stale claims, left by a sweep that was killed (SIGKILL, a lost machine), are taken over: at
once when the holder is a process of this host that no longer exists (or whose pid now belongs
to another process: a claim records its process's start time), otherwise when its
heartbeat (the claim file's mtime, touched every `heartbeat_s` by a background thread) is older
than `stale_s`. A claim file that is not one (not JSON, no host, a pid that is not a process id)
holds nothing: it is taken over, and the sweep names it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
        self.me: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
        start = process_start(os.getpid())
        if start is not None:  # tells this process from a later one given the same pid
            self.me["pid_start"] = start
        #: claims found that hold nothing and were taken over, one line each (for the user)
        self.notes: list[str] = []
        self.held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def holder(self, cell_id: str) -> dict[str, Any] | None:
        """Who holds the claim on `cell_id` (None: nobody, or a claim that holds nothing: stale,
        left by a process that is gone, or not a claim at all; the last two say so in `notes`)."""
        path = self._path(cell_id)
        try:
            data = path.read_bytes()
            age = time.time() - path.stat().st_mtime
        except OSError:  # gone meanwhile (released)
            return None
        info, why = parse_claim(data)
        if info is None:
            self._note(f"{path} is not a claim this harness wrote ({why}); taken over")
            return None
        if info["host"] == self.me["host"]:
            if not pid_alive(info["pid"]):
                return None  # a dead process of this machine: a killed sweep
            start = process_start(info["pid"])
            if start is not None and info.get("pid_start") != start:
                if "pid_start" not in info:  # written by hand or by an older harness: say so
                    self._note(f"{path} names process {info['pid']} of this host but not when it started, so "
                               f"it cannot be the sweep's; taken over")
                return None  # the pid belongs to another process now (reused, or never a sweep)
        if age > self.stale_s:
            return None  # no heartbeat for a while: a lost machine or a frozen process
        return info

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def claim(self, cell_id: str) -> bool:
        """Claim `cell_id` for this sweep; False when a live holder has it."""
        if cell_id in self.held:
            return True
        with self._locked():
            other = self.holder(cell_id)
            if other is not None and (other["host"], other["pid"]) != (self.me["host"], self.me["pid"]):
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

    def __enter__(self) -> Claims:
        self._thread = threading.Thread(target=self._beat, daemon=True, name="claims-heartbeat")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for cell_id in list(self.held):
            with contextlib.suppress(OSError):
                self.release(cell_id)


#: the largest pid a claim may name (Linux's pid_max limit is 2**22; os.kill takes a C int)
MAX_PID = 2**31 - 1


def parse_claim(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """(the claim, "") from a claim file's bytes, or (None, why it is not a claim)."""
    try:
        info = json.loads(data.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        return None, "not JSON"
    if not isinstance(info, dict):
        return None, f"JSON {type(info).__name__}, not an object"
    host, pid = info.get("host"), info.get("pid")
    if not isinstance(host, str) or not host:
        return None, "no host"
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= MAX_PID:
        return None, f"pid {pid!r} is not a process id"
    return info, ""


def process_start(pid: int) -> str | None:
    """When process `pid` of this machine started (clock ticks since boot, from /proc), or None
    where that cannot be read (no /proc: not Linux; the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state is field 3
    return fields[19] if len(fields) > 19 else None  # field 22: starttime


def shard_of(cell_id: str, n: int) -> int:
    """The shard (0 .. n-1) a cell belongs to with `--shard i/n`: a stable hash of its id."""
    return int(cell_id[:8], 16) % n
