"""Running a measurement in an isolated worker process, and the import paths workers share.

A worker killed by SIGKILL (what the kernel's OOM killer sends) is reported as out of memory
(`WorkerDied.oom`); an out-of-memory error inside the job comes back as MemoryError.
"""
from __future__ import annotations

import multiprocessing
import signal
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.runtime.devices import is_oom


def add_import_paths(paths: Iterable[str]) -> None:
    """Append `paths` to sys.path (appended: never shadow installed packages), so a process can
    import the task modules its driver could (e.g. `tests.helpers_tasks` from a checkout)."""
    for p in paths:
        if p not in sys.path:
            sys.path.append(p)


class WorkerDied(RuntimeError):
    """The isolated worker ended without reporting. `oom` is True when it was killed by SIGKILL
    (the kernel's OOM killer's signal) or reported an out-of-memory error."""

    def __init__(self, message: str, oom: bool, stage: str | None = None):
        super().__init__(message)
        self.oom = oom
        self.stage = stage


class WorkerError(RuntimeError):
    """The job raised in the worker; the message is "Type: message" of the original error."""


_PRELOAD = ["torch", "harness.model.lm", "harness.runtime.timing", "harness.runtime.memory"]


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        # children fork from a server that imported torch once: ~0.1 s per worker instead of
        # seconds for a fresh interpreter; the server is started lazily, owned by this process
        ctx = multiprocessing.get_context("forkserver")
        try:
            ctx.set_forkserver_preload(_PRELOAD)
        except Exception:
            pass
        return ctx
    return multiprocessing.get_context("spawn")


def _worker_main(conn: Any, job: Callable[..., Iterator[Any]], args: tuple, sys_path: list[str]) -> None:
    add_import_paths(sys_path)
    try:
        for item in job(*args):
            conn.send(("item", item))
        conn.send(("done", None))
    except BaseException as exc:  # report everything; the parent decides
        try:
            conn.send(("error", (is_oom(exc), f"{type(exc).__name__}: {exc}")))
        except Exception:
            pass
    finally:
        conn.close()


def run_isolated(
    job: Callable[..., Iterator[Any]],
    *args: Any,
    on_item: Callable[[Any], None] | None = None,
    poll_s: float = 0.2,
) -> list[Any]:
    """Run the generator function `job(*args)` in a fresh worker process; return what it yields.

    `job` and `args` must be picklable: a module-level function of an importable module (not
    the __main__ script, which the worker does not load). Items are sent back as they are
    yielded, so a worker that dies keeps what it already reported: `on_item` sees each one as it
    arrives. A job yielding ("stage", name) marks where it is (reported in `WorkerDied`).
    Raises `WorkerDied` (with `.oom`) if the worker ends without finishing, `WorkerError` if the
    job raised (MemoryError if it ran out of memory).
    """
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = _start_worker(ctx, send, job, args)
    send.close()
    got = _Received()
    try:
        _receive(recv, proc, poll_s, on_item, got)
    finally:
        recv.close()
        if got.finished:
            proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
        proc.join()
    if not got.finished:
        raise _died(proc.exitcode, got.stage)
    return got.items


def _start_worker(ctx: Any, send: Any, job: Callable[..., Iterator[Any]], args: tuple) -> Any:
    """Start the worker process running `job(*args)`, reporting through `send`."""
    proc = ctx.Process(target=_worker_main, args=(send, job, args, list(sys.path)), daemon=True)
    # The worker needs only `job`'s module. Hide __main__ while starting it, so that it does not
    # re-run the calling script (an unguarded script would recurse; a guarded one costs time).
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        proc.start()
    finally:
        if main is not None:
            sys.modules["__main__"] = main
    return proc


@dataclass
class _Received:
    """What a worker has reported so far."""

    items: list[Any] = field(default_factory=list)
    stage: str | None = None  # the last ("stage", name) it yielded
    finished: bool = False  # it said "done"


def _receive(recv: Any, proc: Any, poll_s: float, on_item: Callable[[Any], None] | None, got: _Received) -> None:
    """Read the worker's reports into `got` until it is done or gone; raise the job's own error
    (MemoryError when it ran out of memory, else WorkerError)."""
    while True:
        try:
            if not recv.poll(poll_s):
                if not proc.is_alive() and not recv.poll(0):
                    return
                continue
            kind, payload = recv.recv()
        except EOFError:
            return
        if kind == "item":
            if isinstance(payload, tuple) and len(payload) == 2 and payload[0] == "stage":
                got.stage = payload[1]
            got.items.append(payload)
            if on_item is not None:
                on_item(payload)
        elif kind == "done":
            got.finished = True
            return
        elif kind == "error":
            oom, msg = payload
            if oom:
                raise MemoryError(msg)
            raise WorkerError(msg)


def _died(code: int | None, stage: str | None) -> WorkerDied:
    """The error for a worker that ended without finishing: killed by a signal (SIGKILL: out of
    memory, probably), or exited with `code`; `stage` says where it was."""
    where = f" during {stage}" if stage else ""
    if code is not None and code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        oom = sig == signal.SIGKILL
        hint = " (probably the kernel's out-of-memory killer)" if oom else ""
        return WorkerDied(f"measurement worker killed by {name}{hint}{where}", oom=oom, stage=stage)
    return WorkerDied(f"measurement worker exited with code {code}{where} without reporting", oom=False,
                      stage=stage)


def worker_available() -> bool:
    """False inside a daemonic process (which may not start children), e.g. a multiprocessing.Pool worker."""
    return not multiprocessing.current_process().daemon
