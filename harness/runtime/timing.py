"""Timing with warm-up and repeats, on two clocks.

`time_calls`: `warmup` untimed calls, then `repeats` calls each timed on its own with
`time.perf_counter` (wall) and `time.process_time` (the process's CPU time, all its threads),
bracketed by `torch.cuda.synchronize()` on a CUDA device so that queued kernels are inside the
interval. The result is the median and the spread = interquartile range (75th minus 25th
percentile, linear interpolation as numpy's default) of the repeats, on the `clock` chosen.

Why two clocks: on a shared CPU, wall time with 2 threads was seen 5-30x inflated by other
work while the CPU time of a 1-thread measurement stayed stable. So on CPU with one thread the
harness reports CPU time (`clock="cpu"`), keeps the wall median beside it, and flags the row
`loaded` when the two disagree by more than LOAD_TOLERANCE. On CUDA, synchronised wall time is
the measure (the host's CPU time says nothing about the device).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any


def quantile(sorted_xs: Sequence[float], q: float) -> float:
    """The q-quantile of already sorted values, linear interpolation (numpy's default)."""
    if not sorted_xs:
        return float("nan")
    pos = (len(sorted_xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(samples: Sequence[float]) -> tuple[float, float]:
    """(median, interquartile range) of the samples; IQR is 0 for one sample."""
    xs = sorted(float(x) for x in samples)
    if not xs:
        return float("nan"), float("nan")
    return statistics.median(xs), quantile(xs, 0.75) - quantile(xs, 0.25)


#: wall and CPU medians further apart than this (relative) mark a measurement as `loaded`
LOAD_TOLERANCE = 0.20
CLOCKS = ("wall", "cpu")


@dataclass
class Timing:
    """Per-call times of the timed repeats, in seconds: `samples` on the wall clock,
    `cpu_samples` on the process's CPU clock. `median`, `spread` and `rate` use `clock`."""

    samples: list[float] = field(default_factory=list)
    cpu_samples: list[float] = field(default_factory=list)
    clock: str = "wall"

    def _chosen(self) -> list[float]:
        if self.clock not in CLOCKS:
            raise ValueError(f"unknown clock {self.clock!r}; choose one of {CLOCKS}")
        return self.cpu_samples if self.clock == "cpu" else self.samples

    @property
    def median(self) -> float:
        return summarize(self._chosen())[0]

    @property
    def spread(self) -> float:
        """Interquartile range of the samples."""
        return summarize(self._chosen())[1]

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def wall_median(self) -> float:
        return summarize(self.samples)[0]

    @property
    def cpu_median(self) -> float:
        return summarize(self.cpu_samples)[0]

    def rate(self, amount: float) -> tuple[float, float]:
        """(median, IQR) of amount / time per sample, e.g. tokens per second."""
        return summarize([amount / t for t in self._chosen() if t > 0])

    def loaded(self, threads: int) -> bool | None:
        """Did the machine's other work distort this measurement? With one thread, CPU and wall
        time agree on an idle core, so a relative gap above LOAD_TOLERANCE (either way) says
        the process waited for a core. With more threads CPU time may exceed wall time, so
        only wall above CPU time by the tolerance (less than one core's worth of work) counts.
        None without CPU samples."""
        w, c = self.wall_median, self.cpu_median
        if not self.cpu_samples or not (c > 0) or not (w > 0):
            return None
        if threads <= 1:
            return abs(w / c - 1.0) > LOAD_TOLERANCE
        return w > (1.0 + LOAD_TOLERANCE) * c

    def provenance(self, threads: int | None, on_cpu: bool) -> dict[str, Any]:
        """The timing-provenance columns of a row (harness.sweep.results): clock, both medians, threads,
        and the load flag (CPU only)."""
        out: dict[str, Any] = {"clock": self.clock, "wall_time_s": self.wall_median}
        if threads is not None:
            out["threads"] = int(threads)
        if on_cpu and self.cpu_samples:
            out["cpu_time_s"] = self.cpu_median
            flag = self.loaded(threads or 1)
            if flag is not None:
                out["loaded"] = flag
        return out


def device_sync(device: Any) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op off CUDA)."""
    dev = str(device)
    if dev.startswith("cuda"):
        import torch

        d = torch.device(dev)
        return lambda: torch.cuda.synchronize(d)
    return lambda: None


def time_calls(
    fn: Callable[[], Any],
    warmup: int,
    repeats: int,
    sync: Callable[[], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
    around_first: Callable[[], AbstractContextManager[Any]] | None = None,
    cpu_timer: Callable[[], float] = time.process_time,
    clock: str = "wall",
) -> Timing:
    """Call `fn` `warmup` times untimed, then `repeats` times, timing each call on its own.

    `sync` (e.g. `device_sync("cuda")`) runs before the clock starts and before it stops, so
    asynchronous device work is counted. `timer` is injectable for tests. `around_first()`, if
    given, is a context manager entered before the first timed call's clock starts and left after
    it stops, e.g. `PeakMemory` to measure a warmed-up call at no extra cost. Both clocks are
    always recorded; `clock` picks the one `median`, `spread` and `rate` report.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; choose one of {CLOCKS}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = Timing(clock=clock)
    for i in range(repeats):
        with (around_first() if around_first is not None and i == 0 else contextlib.nullcontext()):
            sync()
            c0, t0 = cpu_timer(), timer()
            fn()
            sync()
            t1, c1 = timer(), cpu_timer()
            out.samples.append(t1 - t0)
            out.cpu_samples.append(c1 - c0)
    return out
