"""What every timed task shares (efficiency, mixer_efficiency): the settings, their checks,
the thread count and clock, and running a measurement job in an isolated worker whose death
still leaves a row for everything it planned."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field

from harness.tasks.base import Task, metric_row

if TYPE_CHECKING:
    from harness.sweep.cell import Cell


class MeasureParams(Task.Params):
    """Settings every timed measurement shares (efficiency, mixer_efficiency)."""

    #: untimed calls before the timed ones
    warmup: int = Field(1, ge=0)
    #: timed calls; the row is their median, spread their IQR
    repeats: int = Field(5, ge=1)
    #: untimed decode steps before the timed ones
    decode_warmup: int = Field(2, ge=0)
    #: timed decode steps (per-token latency = their median)
    decode_steps: int = Field(16, ge=1)
    #: on CPU, cells with batch x (longest length measured) above this are rejected up
    #: front (suites with `skip_invalid: true` drop them)
    max_tokens_cpu: int = Field(32768, ge=1)
    #: run in an isolated worker process: auto = on CPU only
    isolate: Literal["auto", "process", "none"] = "auto"
    #: torch intra-op threads for the measurement; None: 1 on CPU (stable CPU time, no
    #: stalls of oversubscribed OpenMP threads), the process's setting on CUDA
    threads: int | None = Field(None, ge=1)
    #: the clock timed rows report: auto = CPU time on CPU with one thread, else wall time
    #: (both are always recorded, in cpu_time_s and wall_time_s)
    clock: Literal["auto", "wall", "cpu"] = "auto"


def stage_list(stages: tuple[str, ...]) -> Any:
    """The type of a `measure` list over `stages`: at least one stage, each once, in the given order."""
    def unique(v: list[str]) -> list[str]:
        if not v:
            raise ValueError("measure needs at least one of " + ", ".join(stages))
        return list(dict.fromkeys(v))

    return Annotated[list[Literal[stages]], AfterValidator(unique)]  # type: ignore[valid-type]


def measure_spec(cell: Cell, p: MeasureParams, threads: int | None) -> dict[str, Any]:
    """What a measuring job needs of its cell (sent to an isolated worker as plain data): the
    model, the run settings, the params, and the resolved threads and clock."""
    threads = resolve_threads(p, cell.device, threads)
    return {"model": dict(cell.model), "seq_len": cell.seq_len, "batch": cell.batch, "seed": cell.seed,
            "dtype": cell.dtype, "device": cell.device, "backend": cell.backend,
            "params": p.model_dump(mode="json"), "threads": threads,
            "clock": resolve_clock(p.clock, cell.device, threads)}


def check_measurement(p: MeasureParams, device: str, batch: int, longest: int) -> None:
    """The checks every timed measurement makes while the suite is validated."""
    if p.clock == "cpu" and device != "cpu":
        raise ValueError(f"clock: cpu measures the host's CPU time, which says nothing about {device} "
                         f"kernels; use clock: auto or wall on {device}")
    if device == "cpu" and batch * longest > p.max_tokens_cpu:
        raise ValueError(
            f"{batch} x {longest} = {batch * longest} tokens is above max_tokens_cpu={p.max_tokens_cpu} "
            f"for a CPU measurement; raise params.max_tokens_cpu to run it"
        )


def resolve_threads(p: MeasureParams, device: str, current: int | None) -> int | None:
    """The measurement's torch thread count: the param, else 1 on CPU, else the process's."""
    if p.threads is not None:
        return p.threads
    return 1 if device == "cpu" else current


def resolve_clock(clock: str, device: str, threads: int | None) -> str:
    """`auto`: CPU time on CPU with one thread (stable under load), else synchronised wall time."""
    if clock != "auto":
        return clock
    return "cpu" if device == "cpu" and (threads or 1) == 1 else "wall"


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the body with `n` torch intra-op threads (None: as set), then restore the setting."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def run_job(job: Any, spec: dict[str, Any], isolate: str, device: str,
            plan: list[tuple[str, str, int | None]]) -> list[dict[str, Any]]:
    """Rows of `job(spec)` (a generator of rows and ("stage", name) markers), in an isolated
    worker when `isolate` says so ("auto": off CUDA). If the worker dies or fails, the rows it
    reported are kept and every planned (stage, metric, context_len) it did not report
    gets status "oom" (out of memory, SIGKILL) or "failed", with the error."""
    from harness.runtime.isolate import (
        WorkerDied,
        WorkerError,
        run_isolated,
        worker_available,
    )

    isolated = isolate == "process" or (isolate == "auto" and not device.startswith("cuda"))
    if not (isolated and worker_available()):
        return [r for r in job(spec) if isinstance(r, dict)]
    got: list[Any] = []
    try:
        run_isolated(job, spec, on_item=got.append)
    except (WorkerDied, WorkerError, MemoryError) as exc:
        oom = isinstance(exc, MemoryError) or getattr(exc, "oom", False)
        rows = [r for r in got if isinstance(r, dict)]
        return rows + missing_rows(plan, got, "oom" if oom else "failed", str(exc))
    return [r for r in got if isinstance(r, dict)]


def missing_rows(plan: list[tuple[str, str, int | None]], got: list[Any], status: str,
                 error: str) -> list[dict[str, Any]]:
    """Rows with `status` for every planned (stage, metric, context_len) not in `got`."""
    have = {(r["metric"], r.get("context_len")) for r in got if isinstance(r, dict)}
    return [
        metric_row(m, None, context_len=c, status=status, error=error)
        for _, m, c in plan
        if (m, c) not in have
    ]
