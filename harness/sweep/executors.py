"""Where cells run: in this process (`serial`), in a local pool of spawned processes (`pool`),
or as Ray tasks (`ray`, local or a cluster). An executor only runs `execute_cell` and yields
(cell, rows) as cells finish; the driver writes every result, so all executors produce the same
table and only the driver touches the results directory."""
from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from harness.registry import TASKS
from harness.runtime.devices import exception_status
from harness.sweep.cell import Cell
from harness.sweep.run_cell import RunContext, crash_rows, describe_exception, execute_cell

EXECUTORS = ("serial", "pool", "ray")
Rows = list[dict[str, Any]] | None  # None: not run here (another sweep runs the cell)
Admit = Callable[[Cell], bool]
_DIED = ("worker process died while running this cell alone (killed, crashed, or out of memory); rerun with "
         "--retry-failed")


class Executor(Protocol):
    name: str

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: Any) -> None: ...

    def run(self, cells: list[Cell], admit: Admit | None = None) -> Iterator[tuple[Cell, Rows]]:
        """Yield (cell, rows) as cells finish, in any order. `admit(cell)`, asked just before a
        cell starts, may refuse it (another sweep runs it): then (cell, None) is yielded."""
        ...


class SerialExecutor:
    name = "serial"

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def run(self, cells: list[Cell], admit: Admit | None = None) -> Iterator[tuple[Cell, Rows]]:
        for cell in cells:
            yield cell, execute_cell(cell, self.ctx) if admit is None or admit(cell) else None


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


@dataclasses.dataclass
class _PoolRun:
    """A pool's run of cells: waiting, to run again alone, in flight, and the current pool."""

    pending: deque[Cell]
    pool: ProcessPoolExecutor
    suspects: deque[Cell] = dataclasses.field(default_factory=deque)  # in flight when a worker died
    running: dict[Future, Cell] = dataclasses.field(default_factory=dict)


class PoolExecutor:
    """A local pool of `workers` spawned processes; torch threads split between them."""

    name = "pool"

    def __init__(self, ctx: RunContext, workers: int):
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        threads = max(1, usable_cores() // workers)
        self.ctx = dataclasses.replace(ctx, torch_threads=threads)

    def __enter__(self) -> PoolExecutor:
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

    def run(self, cells: list[Cell], admit: Admit | None = None) -> Iterator[tuple[Cell, Rows]]:
        # At most `workers` cells are submitted at a time, so when a worker dies we know which
        # cells were in flight. A dead worker breaks the whole pool and every cell in flight
        # looks dead, so those cells are suspects: each runs again alone in a fresh pool, and
        # only one that kills its worker alone gets the failed row. Its neighbours are not blamed.
        run = _PoolRun(pending=deque(cells), pool=self._new_pool())
        finished = False
        try:
            while run.pending or run.running or run.suspects:
                if run.suspects:
                    if not run.running and not self._submit_suspect(run):
                        continue
                else:
                    yield from self._submit_pending(run, admit)
                    if not run.running:
                        continue
                yield from self._collect(run)
            finished = True
        finally:
            # interrupted: do not wait for cells in flight. Ctrl-C reaches the workers too, a
            # SIGTERM only the driver, so stop them here (otherwise exiting waits for their cells)
            if not finished:
                _terminate_workers(run.pool)
            run.pool.shutdown(wait=finished, cancel_futures=True)

    def _submit_suspect(self, run: _PoolRun) -> bool:
        """Submit the next suspect alone; False when the pool broke with nothing in flight (a
        fresh pool then takes it on the next round)."""
        cell = run.suspects.popleft()
        fut = self._submit(run.pool, cell)
        if fut is None:
            run.suspects.appendleft(cell)
            self._renew_pool(run)
            return False
        run.running[fut] = cell
        return True

    def _submit_pending(self, run: _PoolRun, admit: Admit | None) -> Iterator[tuple[Cell, Rows]]:
        """Submit pending cells until `workers` are in flight; yield (cell, None) for each one
        `admit` refuses."""
        while run.pending and len(run.running) < self.workers:
            cell = run.pending.popleft()
            if admit is not None and not admit(cell):
                yield cell, None
                continue
            fut = self._submit(run.pool, cell)
            if fut is None:  # a worker died since the last wait: this one runs alone later
                run.suspects.append(cell)
                return
            run.running[fut] = cell

    def _collect(self, run: _PoolRun) -> Iterator[tuple[Cell, Rows]]:
        """Wait for a cell to finish and yield what finished; when a worker died, the pool is
        broken: every cell still in flight died with it (a fresh pool, and the dead are suspects
        unless one ran alone, which then gets the failed row)."""
        done, _ = wait(run.running, return_when=FIRST_COMPLETED)
        dead: list[Cell] = []
        for fut in done:
            cell = run.running.pop(fut)
            rows = self._result(fut, cell)
            if rows is None:
                dead.append(cell)
            else:
                yield cell, rows
        if not dead:
            return
        wait(run.running)
        for fut, cell in list(run.running.items()):
            rows = self._result(fut, cell)
            if rows is None:
                dead.append(cell)
            else:
                yield cell, rows
        run.running.clear()
        self._renew_pool(run)
        if len(dead) == 1:  # it ran alone (or was the only one in flight): it killed its worker
            yield dead[0], crash_rows(dead[0], self.ctx, _DIED)
        else:
            run.suspects.extend(dead)

    def _renew_pool(self, run: _PoolRun) -> None:
        run.pool.shutdown(wait=False, cancel_futures=True)
        run.pool = self._new_pool()

    def _submit(self, pool: ProcessPoolExecutor, cell: Cell) -> Future | None:
        """The cell's future; None when the pool is already broken (a worker died since the last
        wait), which the next wait sees through the futures still in flight."""
        try:
            return pool.submit(execute_cell, cell, self.ctx)
        except BrokenProcessPool:
            return None

    def _result(self, fut: Future, cell: Cell) -> list[dict[str, Any]] | None:
        """The cell's rows; None when its worker died (the pool broke)."""
        try:
            return fut.result()
        except BrokenProcessPool:
            return None
        except Exception as exc:  # e.g. the cell could not be pickled
            return crash_rows(cell, self.ctx, describe_exception(exc), exception_status(exc))


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

    def __init__(self, ctx: RunContext, address: str | None = None, num_cpus: int | None = None):
        self.ctx = ctx
        self.address = address
        self.num_cpus = num_cpus
        self._ray: Any = None
        self._started = False

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError:
            raise RuntimeError(
                "the Ray executor needs Ray: pip install 'hybrid-attention-harness[ray]' "
                "(or pip install 'ray[default]')"
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

    def run(self, cells: list[Cell], admit: Admit | None = None) -> Iterator[tuple[Cell, Rows]]:
        ray = self._ray
        remote = ray.remote(execute_cell)
        refs: dict[Any, Cell] = {}
        for cell in cells:
            if admit is not None and not admit(cell):  # all submitted at once: admitted up front
                yield cell, None
                continue
            res = TASKS.get(cell.task)().resources(cell)
            cpus = res.get("num_cpus", 1)
            ctx = dataclasses.replace(self.ctx, torch_threads=max(1, int(cpus)))
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


def make_executor(kind: str, ctx: RunContext, workers: int | None = None, address: str | None = None) -> Executor:
    if kind == "serial":
        return SerialExecutor(ctx)
    if kind == "pool":
        return PoolExecutor(ctx, workers or usable_cores())
    if kind == "ray":
        return RayExecutor(ctx, address, workers)
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
