"""Run the cells of a suite: pick the ones not done, execute them, store each as it finishes.

`execute_cell` runs one cell in the current process and never raises for a cell's own failure:
an exception becomes a row with status "failed" (or "oom" for out-of-memory errors) and the
error message, and a NaN or infinite value becomes status "diverged". Executors only decide
where `execute_cell` runs (in-process, a local process pool, Ray tasks); the driver writes every
result, so all executors produce the same table and only the driver touches the results
directory.

A cell may consume another's checkpoint (a parameter `{from: <task>}` in the suite; see
`Cell.dependencies`). The sweep then runs in waves, producers before consumers, with any
executor: a producer consumed by some cell saves its model under
`<results_dir>/checkpoints/<producer cell_id>/`, each consumer gets that path (`Cell.inputs`), and
a consumer whose producer is not ok gets a failed row naming it instead of running.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol

import pandas as pd

from harness import __version__
from harness.sweep.cell import Cell
from harness.registry import TASKS
from harness.runtime.devices import exception_status, free_device_memory
from harness.runtime.isolate import add_import_paths
from harness.sweep.results import OK, REQUIRED_TASK_ROW_KEYS, STATUSES, TASK_ROW_KEYS, rows_to_frame
from harness.sweep.store import (RESULTS_FILE, ResultsError, cell_statuses, check_can_write, check_writable_results,
                           clean_stale_tmp, consolidate, os_error_text, read_cells, repair, write_cell)

EXECUTORS = ("serial", "pool", "ray")
_MAX_ERROR_CHARS = 2000


# ---------------------------------------------------------------------------------------------
# Running one cell


@dataclass(frozen=True)
class RunContext:
    """What every cell of a sweep shares; computed once in the driver and sent along."""

    harness_version: str
    git_sha: str
    #: paths the driver could import task modules from (its working directory)
    sys_path: tuple[str, ...] = ()
    #: torch intra-op threads for the process running the cell; None leaves torch's default
    torch_threads: Optional[int] = None


def make_context(torch_threads: Optional[int] = None) -> RunContext:
    return RunContext(__version__, git_sha(), (os.getcwd(),), torch_threads)


@lru_cache(maxsize=1)
def git_sha() -> str:
    """Commit of the harness checkout the code runs from ("-dirty" with uncommitted changes to
    tracked files), or "unknown" (installed from a wheel, no git, no commit yet). Never fails."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != root:  # not our checkout (e.g. site-packages inside a repo)
        return "unknown"
    sha = git("rev-parse", "HEAD")
    if not sha:
        return "unknown"
    # --no-optional-locks: a plain `git status` may take .git/index.lock to refresh the index,
    # which would collide with the user's own git commands in that checkout
    dirty = git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    return sha + ("-dirty" if dirty else "")


def describe_exception(exc: BaseException) -> str:
    """`Type: message [at file:line in func]`, the innermost frame telling where it broke."""
    msg = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        f = frames[-1]
        msg += f" [at {_short_path(f.filename)}:{f.lineno} in {f.name}]"
    return msg if len(msg) <= _MAX_ERROR_CHARS else msg[: _MAX_ERROR_CHARS - 3] + "..."


def _short_path(filename: str) -> str:
    parts = Path(filename).parts
    for anchor in ("harness", "variants", "tests", "site-packages"):
        if anchor in parts:
            return str(Path(*parts[parts.index(anchor):]))
    return filename


def _prepare_process(ctx: RunContext, task_modules: tuple[str, ...]) -> None:
    import importlib

    add_import_paths(ctx.sys_path)
    for name in task_modules:
        importlib.import_module(name)


def _seed_and_threads(seed: int, threads: Optional[int]) -> None:
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _torch_version() -> str:
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:
        return "none"


def _check_task_rows(rows: Any) -> list[dict[str, Any]]:
    """Make a task's output rows valid table rows, or raise (the cell then fails, loudly)."""
    if not isinstance(rows, list) or not rows:
        raise TypeError(f"a task must return a non-empty list of row dicts, got {type(rows).__name__}: {rows!r:.200}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"row {i} is a {type(row).__name__}, not a dict")
        unknown = sorted(set(row) - TASK_ROW_KEYS)
        if unknown:
            raise ValueError(f"row {i} has keys outside the results schema: {unknown}; allowed: {sorted(TASK_ROW_KEYS)}")
        missing = [k for k in REQUIRED_TASK_ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"row {i} lacks {missing}")
        row = dict(row)
        status = row.get("status") or OK
        if status not in STATUSES:
            raise ValueError(f"row {i} has status {status!r}; allowed: {list(STATUSES)}")
        value = row["value"]
        if value is not None:
            value = float(value)
            if status == OK and not math.isfinite(value):
                status = "diverged"
                row.setdefault("error", f"non-finite value {value} for metric {row['metric']!r}")
        row["value"], row["status"] = value, status
        out.append(row)
    return out


def execute_cell(cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
    """Run one cell here and return its complete table rows. Never raises for the cell's own
    failures (KeyboardInterrupt and SystemExit still stop the sweep)."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    base = {
        **cell.identity_columns(),
        "harness_version": ctx.harness_version,
        "git_sha": ctx.git_sha,
        "started_at": started.isoformat(),
    }
    try:
        _prepare_process(ctx, cell.task_modules)
        task = TASKS.get(cell.task)()
        _seed_and_threads(cell.seed, ctx.torch_threads)
        rows = [{**base, **row} for row in _check_task_rows(task.run(cell.for_task()))]
        rows_to_frame(rows)  # fails here, as this cell's error, if a value cannot fit its column
    except Exception as exc:
        rows = [{**base, "metric": None, "value": None, "unit": None, "status": exception_status(exc),
                 "error": describe_exception(exc)}]
        free_device_memory()  # the next cell in this process must not inherit cached blocks
    extra = {"torch_version": _torch_version(), "wall_s": time.perf_counter() - t0}
    return [{**row, **extra} for row in rows]


def crash_rows(cell: Cell, ctx: RunContext, error: str, status: str = "failed") -> list[dict[str, Any]]:
    """Rows for a cell whose worker died before it could report (killed, crashed, lost)."""
    return [{**cell.identity_columns(), "torch_version": _torch_version(), "harness_version": ctx.harness_version,
             "git_sha": ctx.git_sha, "started_at": datetime.now(timezone.utc).isoformat(), "wall_s": None,
             "metric": None, "value": None, "unit": None, "status": status, "error": error}]


def dependency_rows(cell: Cell, ctx: RunContext, error: str) -> list[dict[str, Any]]:
    """The failed row of a cell not run because a cell it consumes is not ok."""
    return crash_rows(cell, ctx, error)


# ---------------------------------------------------------------------------------------------
# Executors


class Executor(Protocol):
    name: str

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc: Any) -> None: ...

    def run(self, cells: list[Cell]) -> Iterator[tuple[Cell, list[dict[str, Any]]]]:
        """Yield (cell, rows) as cells finish, in any order."""
        ...


class SerialExecutor:
    name = "serial"

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def __enter__(self) -> "SerialExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def run(self, cells: list[Cell]) -> Iterator[tuple[Cell, list[dict[str, Any]]]]:
        for cell in cells:
            yield cell, execute_cell(cell, self.ctx)


def _pool_worker_init(parent_pid: int) -> None:
    # A pool worker must not outlive a driver killed with SIGKILL (which runs no cleanup):
    # watch the parent and leave when it is gone.
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class PoolExecutor:
    """A local pool of `workers` spawned processes; torch threads split between them."""

    name = "pool"

    def __init__(self, ctx: RunContext, workers: int):
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        threads = max(1, usable_cores() // workers)
        self.ctx = RunContext(ctx.harness_version, ctx.git_sha, ctx.sys_path, threads)

    def __enter__(self) -> "PoolExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process that has imported torch (threads, CUDA) is unsafe
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_pool_worker_init,
            initargs=(os.getpid(),),
        )

    def run(self, cells: list[Cell]) -> Iterator[tuple[Cell, list[dict[str, Any]]]]:
        # At most `workers` cells are submitted at a time, so when a worker dies we know which
        # cells were in flight: those are recorded as failed, the rest go to a fresh pool.
        pending = deque(cells)
        running: dict[Future, Cell] = {}
        pool = self._new_pool()
        finished = False
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    cell = pending.popleft()
                    running[pool.submit(execute_cell, cell, self.ctx)] = cell
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    cell = running.pop(fut)
                    rows, died = self._result(fut, cell)
                    broken |= died
                    yield cell, rows
                if broken:
                    wait(running)
                    for fut, cell in list(running.items()):
                        yield cell, self._result(fut, cell)[0]
                    running.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = self._new_pool()
            finished = True
        finally:
            # interrupted: do not wait for cells in flight. Ctrl-C reaches the workers too, a
            # SIGTERM only the driver, so stop them here (otherwise exiting waits for their cells)
            if not finished:
                _terminate_workers(pool)
            pool.shutdown(wait=finished, cancel_futures=True)

    def _result(self, fut: Future, cell: Cell) -> tuple[list[dict[str, Any]], bool]:
        try:
            return fut.result(), False
        except BrokenProcessPool:
            msg = ("worker process died while this cell was in flight (killed, crashed, or out of "
                   "memory); rerun with --retry-failed")
            return crash_rows(cell, self.ctx, msg), True
        except Exception as exc:  # e.g. the cell could not be pickled
            return crash_rows(cell, self.ctx, describe_exception(exc), exception_status(exc)), False


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    stop = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if stop is not None:
        stop()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            proc.terminate()


class RayExecutor:
    """Each cell a Ray task with the resources its task asks for (one GPU per cuda cell)."""

    name = "ray"

    def __init__(self, ctx: RunContext, address: Optional[str] = None, num_cpus: Optional[int] = None):
        self.ctx = ctx
        self.address = address
        self.num_cpus = num_cpus
        self._ray: Any = None
        self._started = False

    def __enter__(self) -> "RayExecutor":
        try:
            import ray
        except ImportError:
            raise RuntimeError(
                "the Ray executor needs Ray: pip install 'hybrid-attention-harness[ray]' (or pip install 'ray[default]')"
            ) from None
        self._ray = ray
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    # a private local instance on loopback; "local" never attaches to a cluster
                    # that happens to be running on this machine
                    ray.init(address="local", num_cpus=self.num_cpus or usable_cores(), include_dashboard=False,
                             _node_ip_address="127.0.0.1", log_to_driver=False)
            except Exception as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                raise RuntimeError(f"could not start or reach {where}: {type(exc).__name__}: {exc}") from exc
            self._started = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            self._ray.shutdown()

    def run(self, cells: list[Cell]) -> Iterator[tuple[Cell, list[dict[str, Any]]]]:
        ray = self._ray
        remote = ray.remote(execute_cell)
        refs: dict[Any, Cell] = {}
        for cell in cells:
            res = TASKS.get(cell.task)().resources(cell)
            cpus = res.get("num_cpus", 1)
            ctx = RunContext(self.ctx.harness_version, self.ctx.git_sha, self.ctx.sys_path, max(1, int(cpus)))
            # max_retries=0: a cell that kills its worker is data (a failed row), not a loop
            ref = remote.options(num_cpus=cpus, num_gpus=res.get("num_gpus", 0), max_retries=0).remote(cell, ctx)
            refs[ref] = cell
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    cell = refs.pop(ref)
                    try:
                        rows = ray.get(ref)
                    except Exception as exc:  # worker crash, node lost, Ray's OOM killer
                        rows = crash_rows(cell, self.ctx, describe_exception(exc), exception_status(exc))
                    yield cell, rows
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)


def make_executor(kind: str, ctx: RunContext, workers: Optional[int] = None, address: Optional[str] = None) -> Executor:
    if kind == "serial":
        return SerialExecutor(ctx)
    if kind == "pool":
        return PoolExecutor(ctx, workers or usable_cores())
    if kind == "ray":
        return RayExecutor(ctx, address, workers)
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")


# ---------------------------------------------------------------------------------------------
# The sweep


@dataclass
class SweepSummary:
    suite: str
    results_dir: Path
    n_cells: int  # cells of the suite
    n_skipped: int  # already in the store, not run
    ran: Counter = field(default_factory=Counter)  # status -> cells run now
    #: every cell of the suite whose stored rows are not all ok: (cell, status, first error)
    not_ok: list[tuple[Cell, str, str]] = field(default_factory=list)
    table: Optional[pd.DataFrame] = None
    interrupted: bool = False
    #: the signal that interrupted the sweep (SIGINT for Ctrl-C, SIGTERM), when interrupted
    signal: Optional[int] = None
    #: why the sweep stopped before its end although no cell failed (results could not be written)
    error: Optional[str] = None
    #: what the sweep repaired in the results directory before it started (store.repair)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.not_ok and not self.interrupted and not self.error

    @property
    def exit_code(self) -> int:
        """The command line's exit status: 128 + signal when interrupted (130 Ctrl-C, 143
        SIGTERM), 2 when results could not be written, 1 with a cell not ok, else 0."""
        if self.interrupted:
            return 128 + (self.signal or signal.SIGINT)
        if self.error:
            return 2
        return 1 if self.not_ok else 0


def _cell_status(rows: list[dict[str, Any]]) -> str:
    bad = [r.get("status") or "failed" for r in rows if r.get("status") != OK]
    return bad[0] if bad else OK


def select_cells(cells: list[Cell], results_dir: Path, retry_failed: bool = False) -> tuple[list[Cell], int, int]:
    """The cells to run: those without stored rows, plus (retry_failed) those not all ok.
    Returns (to run, skipped, skipped although not ok)."""
    done = cell_statuses(results_dir)
    todo = [c for c in cells if c.cell_id not in done or (retry_failed and done[c.cell_id] != OK)]
    run_ids = {c.cell_id for c in todo}
    skipped_bad = sum(1 for c in cells if c.cell_id not in run_ids and done.get(c.cell_id, OK) != OK)
    return todo, len(cells) - len(todo), skipped_bad


def run_sweep(
    suite_name: str,
    cells: list[Cell],
    results_dir: Path,
    executor: str = "serial",
    workers: Optional[int] = None,
    address: Optional[str] = None,
    retry_failed: bool = False,
    console: Any = None,
    progress: bool = True,
) -> SweepSummary:
    """Run the `cells` not yet in `results_dir`, writing each cell's rows as soon as it finishes,
    then rebuild results.parquet. Interrupting (Ctrl-C, or SIGTERM in the main thread) keeps every
    finished cell.

    Raises ResultsError, before anything runs, when `results_dir` cannot be used: its
    results.parquet was not written by this harness, or it cannot be written and there are cells
    to run. A write that fails later (a full disk) stops the sweep with `summary.error` set."""
    from rich.console import Console

    console = console or Console(stderr=True)
    results_dir = Path(results_dir)
    check_writable_results(results_dir)  # a foreign results.parquet is never overwritten
    repaired = _repair(results_dir) if results_dir.is_dir() else []
    for line in repaired:
        console.print(f"[yellow]repaired[/]: {line}", highlight=False)
    clean_stale_tmp(results_dir)
    todo, skipped, skipped_bad = select_cells(cells, results_dir, retry_failed)
    summary = SweepSummary(suite_name, results_dir, len(cells), skipped, repaired=repaired)
    if skipped:
        console.print(f"{skipped} of {len(cells)} cells already in {results_dir}; skipping them"
                      + (f" ({skipped_bad} not ok: --retry-failed re-runs them)" if skipped_bad else ""))
    todo, reruns = _with_missing_producers(cells, todo, results_dir)
    summary.n_skipped -= len(reruns)
    if reruns:
        console.print(f"{len(reruns)} finished cell(s) run again: a cell to run consumes their checkpoint, "
                      f"which is not in {checkpoints_dir(results_dir)}")
    if todo:
        check_can_write(results_dir)  # before any cell computes for nothing
    ctx = make_context()
    bar = _Progress(console, suite_name, len(todo), enabled=progress and bool(todo))
    statuses = cell_statuses(results_dir)
    errors: dict[str, str] = {}
    by_id = {c.cell_id: c for c in cells}

    def record(cell: Cell, rows: list[dict[str, Any]]) -> None:
        try:
            write_cell(results_dir, cell.cell_id, rows)
        except OSError as exc:
            raise _WriteFailed(f"cannot write the rows of cell {cell.cell_id} ({cell.label()}) in {results_dir}: "
                               f"{os_error_text(exc)}. The sweep stopped; the cells written before are saved: "
                               f"fix that, then rerun the same command to resume") from None
        status = _cell_status(rows)
        statuses[cell.cell_id] = status
        if status != OK:
            errors[cell.cell_id] = next((str(r["error"]) for r in rows if r.get("error")), "")
        summary.ran[status] += 1
        bar.advance(status, cell)

    with _signals_as_interrupt(summary):
        try:
            if todo:
                with make_executor(executor, ctx, workers, address) as ex, bar:
                    for wave in _waves(_with_checkpoint_dirs(cells, todo, results_dir)):
                        ready = []
                        for cell in wave:
                            why = _blocked(cell, statuses, errors, by_id, results_dir)
                            if why:
                                record(cell, dependency_rows(cell, ctx, why))
                            else:
                                deps = cell.dependencies()
                                ready.append(cell.with_inputs({d.param: str(checkpoint_path(results_dir, d.cell_id))
                                                               for d in deps}) if deps else cell)
                        if ready:
                            for cell, rows in ex.run(ready):
                                record(cell, rows)
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.signal = summary.signal or signal.SIGINT
        except _WriteFailed as exc:
            summary.error = str(exc)
        finally:
            summary.table = _consolidate(results_dir, summary)
    summary.not_ok = _not_ok_cells(cells, summary.table)
    return summary


class _WriteFailed(Exception):
    """A cell's rows could not be written: the sweep stops (its message says why)."""


def _repair(results_dir: Path) -> list[str]:
    try:
        return repair(results_dir)
    except OSError as exc:  # a read-only directory: reading still works (store.read_cells)
        return [f"{results_dir} has a damaged cell file that cannot be repaired here ({os_error_text(exc)}); "
                f"its rows are read from {RESULTS_FILE} where it holds them"]


def _consolidate(results_dir: Path, summary: SweepSummary) -> pd.DataFrame:
    """Rebuild results.parquet; if that cannot be written, the table from the cell files (which
    hold every result) and a message in `summary.error`."""
    try:
        return consolidate(results_dir)
    except (OSError, ResultsError) as exc:
        why = os_error_text(exc) if isinstance(exc, OSError) else str(exc)
        summary.error = summary.error or (
            f"cannot rebuild {results_dir / RESULTS_FILE}: {why}. Every finished cell is saved in "
            f"{results_dir / 'cells'} (load_results and harness report read them); rerun to rebuild the table")
        return read_cells(results_dir, warn=False)


@contextlib.contextmanager
def _signals_as_interrupt(summary: SweepSummary) -> Iterator[None]:
    """While the sweep runs, SIGTERM (a scheduler's `timeout`, `kill`) interrupts it like Ctrl-C:
    finished cells are kept and the table is rebuilt. A signal during that clean-up is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        if summary.interrupted:
            return
        summary.interrupted, summary.signal = True, signum
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------------------------------------
# Cells that consume other cells' checkpoints


def checkpoints_dir(results_dir: Path) -> Path:
    return Path(results_dir).resolve() / "checkpoints"


def checkpoint_path(results_dir: Path, cell_id: str) -> Path:
    """Where the sweep keeps the checkpoint of a producing cell that other cells consume."""
    return checkpoints_dir(results_dir) / cell_id


def _has_checkpoint(results_dir: Path, cell_id: str) -> bool:
    from harness.model.checkpoint import is_complete_checkpoint

    return is_complete_checkpoint(checkpoint_path(results_dir, cell_id))


def _with_missing_producers(cells: list[Cell], todo: list[Cell], results_dir: Path) -> tuple[list[Cell], list[Cell]]:
    """`todo` plus the finished (ok) producers whose checkpoint a cell to run needs but which is
    gone (or was never saved: the producer ran before anything consumed it), and so on up."""
    by_id = {c.cell_id: c for c in cells}
    done = cell_statuses(results_dir)
    ids = {c.cell_id for c in todo}
    reruns: list[Cell] = []
    frontier = list(todo)
    while frontier:
        nxt = []
        for cell in frontier:
            for d in cell.dependencies():
                p = by_id.get(d.cell_id)
                if p is None or d.cell_id in ids or done.get(d.cell_id) != OK or _has_checkpoint(results_dir, d.cell_id):
                    continue
                ids.add(d.cell_id)
                reruns.append(p)
                nxt.append(p)
        frontier = nxt
    rerun_ids = {c.cell_id for c in reruns}
    # in the suite's order, so that the table and the progress read as usual
    return [c for c in cells if c.cell_id in ids or c.cell_id in rerun_ids], reruns


def _with_checkpoint_dirs(cells: list[Cell], todo: list[Cell], results_dir: Path) -> list[Cell]:
    """Each cell to run that some cell of the suite consumes, told where to save its model."""
    consumed = {d.cell_id for c in cells for d in c.dependencies()}
    return [c.with_inputs(c.inputs, str(checkpoint_path(results_dir, c.cell_id))) if c.cell_id in consumed else c
            for c in todo]


def _waves(todo: list[Cell]) -> list[list[Cell]]:
    """`todo` in waves: the cells that consume nothing still to run first, then the cells
    consuming only those, and so on (each wave in the given order)."""
    ids = {c.cell_id for c in todo}
    level: dict[str, int] = {}
    by_id = {c.cell_id: c for c in todo}

    def depth(cid: str, seen: frozenset = frozenset()) -> int:
        if cid not in level:
            deps = [d.cell_id for d in by_id[cid].dependencies() if d.cell_id in ids and d.cell_id not in seen]
            level[cid] = 1 + max((depth(p, seen | {cid}) for p in deps), default=-1)
        return level[cid]

    waves: dict[int, list[Cell]] = {}
    for c in todo:
        waves.setdefault(depth(c.cell_id), []).append(c)
    return [waves[k] for k in sorted(waves)]


def _blocked(cell: Cell, statuses: dict[str, str], errors: dict[str, str], by_id: dict[str, Cell],
             results_dir: Path) -> Optional[str]:
    """Why `cell` cannot run (a cell it consumes is not ok, or left no checkpoint), or None."""
    for d in cell.dependencies():
        producer = by_id.get(d.cell_id)
        what = f"{producer.label()} (cell {d.cell_id})" if producer else f"{d.task} cell {d.cell_id}"
        status = statuses.get(d.cell_id)
        if status is None:
            reason = f"has not run: it is neither in this sweep nor in {results_dir}"
        elif status != OK:
            err = errors.get(d.cell_id)
            reason = (f"is {status}: {err.splitlines()[0][:300]}" if err else
                      f"is stored as {status} by an earlier run; --retry-failed re-runs it, then this cell")
        elif not _has_checkpoint(results_dir, d.cell_id):
            reason = f"finished without saving a checkpoint at {checkpoint_path(results_dir, d.cell_id)}"
        else:
            continue
        return f"not run: its input {d.param!r} is the checkpoint of {what}, which {reason}"
    return None


def _not_ok_cells(cells: list[Cell], table: pd.DataFrame) -> list[tuple[Cell, str, str]]:
    by_id = {c.cell_id: c for c in cells}
    bad = table[table["cell_id"].isin(list(by_id)) & (table["status"] != OK)]
    out = []
    for cid, grp in bad.groupby("cell_id", sort=False):
        first = grp.iloc[0]
        err = "" if pd.isna(first["error"]) else str(first["error"])
        out.append((by_id[str(cid)], str(first["status"]), err))
    return out


class _Progress:
    """A rich progress bar: cells done / failed / remaining, elapsed and ETA."""

    def __init__(self, console: Any, name: str, total: int, enabled: bool = True):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.enabled = enabled
        self.total = total
        self.ok = self.failed = 0
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, disable=not enabled,
        )
        self.task_id = self.progress.add_task(name, total=total, stats=self._stats())

    def _stats(self) -> str:
        left = self.total - self.ok - self.failed
        return f"[green]{self.ok} ok[/] [red]{self.failed} failed[/] {left} left"

    def advance(self, status: str, cell: Cell) -> None:
        if status == OK:
            self.ok += 1
        else:
            self.failed += 1
            if self.enabled:
                self.progress.console.print(f"[red]{status}[/]: {cell.label()} ({cell.cell_id})")
        self.progress.update(self.task_id, advance=1, stats=self._stats())

    def __enter__(self) -> "_Progress":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()


def print_summary(summary: SweepSummary, console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"sweep {summary.suite}", show_header=False)
    t.add_row("cells in suite", str(summary.n_cells))
    t.add_row("already done (skipped)", str(summary.n_skipped))
    t.add_row("run now", str(sum(summary.ran.values())))
    for status in STATUSES:
        if summary.ran.get(status):
            t.add_row(f"  {status}", str(summary.ran[status]))
    t.add_row("not ok in the table", str(len(summary.not_ok)))
    t.add_row("results", str(summary.results_dir / RESULTS_FILE))
    console.print(t)
    if summary.not_ok:
        ft = Table(title=f"{len(summary.not_ok)} cell(s) not ok")
        for col in ("cell_id", "cell", "status", "error"):
            ft.add_column(col, overflow="fold")
        for cell, status, err in summary.not_ok[:20]:
            ft.add_row(cell.cell_id, cell.label(), status, err.splitlines()[0][:200] if err else "")
        console.print(ft)
        if len(summary.not_ok) > 20:
            console.print(f"... and {len(summary.not_ok) - 20} more (see the status/error columns)")
        console.print("[red]some cells failed[/]: their rows are in the table with status and error; "
                      "rerun with --retry-failed to run them again")
    if summary.interrupted:
        name = signal.Signals(summary.signal).name if summary.signal else "SIGINT"
        console.print(f"[yellow]interrupted[/] ({name}): finished cells are saved; rerun the same command to resume",
                      highlight=False)
    if summary.error:
        console.print(f"[red]error[/]: {summary.error}", highlight=False)
