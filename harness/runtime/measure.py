"""Measurement utilities: timing with warm-up and repeats, peak memory, out-of-memory detection,
and running a measurement in an isolated worker process.

Timing (`time_calls`): `warmup` untimed calls, then `repeats` calls each timed on its own with
`time.perf_counter` (wall) and `time.process_time` (the process's CPU time, all its threads),
bracketed by `torch.cuda.synchronize()` on a CUDA device so that queued kernels are inside the
interval. The result is the median and the spread = interquartile range (75th minus 25th
percentile, linear interpolation as numpy's default) of the repeats, on the `clock` chosen.

Why two clocks: on a shared CPU, wall time with 2 threads was seen 5-30x inflated by other
work while the CPU time of a 1-thread measurement stayed stable. So on CPU with one thread the
harness reports CPU time (`clock="cpu"`), keeps the wall median beside it, and flags the row
`loaded` when the two disagree by more than LOAD_TOLERANCE. On CUDA, synchronised wall time is
the measure (the host's CPU time says nothing about the device).

Peak memory (`PeakMemory`), the extra bytes a piece of work needs above what was held before it:
- CUDA: `torch.cuda.reset_peak_memory_stats()`, then `torch.cuda.max_memory_allocated()` after
  the work minus `torch.cuda.memory_allocated()` before it (tensor bytes from torch's allocator;
  the allocator's cached-but-free blocks and the CUDA context are not counted).
- CPU (Linux): the process's peak resident set size. Before the work, `malloc_trim(0)` hands
  freed heap pages back to the kernel, the baseline is VmRSS from /proc/self/status and the
  high-water mark VmHWM is reset by writing "5" to /proc/self/clear_refs (Linux >= 4.0); after
  it, VmHWM minus the baseline is the peak. Where clear_refs cannot be written, the fallback is
  VmHWM (or `getrusage(RUSAGE_SELF).ru_maxrss`, KiB on Linux, bytes on macOS) over the process's
  whole life minus the baseline, an upper bound; `PeakMemory.method` says which was used.
  RSS counts every page the process touches: besides live tensors it includes freed memory the
  allocator keeps for reuse within the block (glibc returns allocations of 32 MiB or more to the
  kernel at once, smaller ones go back to its heap) and libraries' scratch buffers (oneDNN,
  OpenMP). It is only meaningful in a process doing nothing else: hence the isolated worker
  (`run_isolated`).

Out of memory (`is_oom`): torch.OutOfMemoryError (CUDA), MemoryError, torch's CPU allocator's
"can't allocate memory" error, or a message containing "out of memory". A worker killed by
SIGKILL (what the kernel's OOM killer sends) is reported as out of memory too (`WorkerDied`).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import multiprocessing
import resource
import signal
import statistics
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator, Optional, Sequence

# ---------------------------------------------------------------------------------------------
# Timing


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

    def loaded(self, threads: int) -> Optional[bool]:
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

    def provenance(self, threads: Optional[int], on_cpu: bool) -> dict[str, Any]:
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
    sync: Optional[Callable[[], None]] = None,
    timer: Callable[[], float] = time.perf_counter,
    around_first: Optional[Callable[[], ContextManager[Any]]] = None,
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


# ---------------------------------------------------------------------------------------------
# Out of memory


def is_oom(exc: BaseException) -> bool:
    """True for out-of-memory errors: torch's OutOfMemoryError, MemoryError, torch's CPU
    allocator failure, or any error whose message says "out of memory"."""
    names = {c.__name__ for c in type(exc).__mro__}
    msg = str(exc).lower()
    return (
        "OutOfMemoryError" in names
        or isinstance(exc, MemoryError)
        or "out of memory" in msg
        or "can't allocate memory" in msg
        or "cannot allocate memory" in msg
    )


def free_device_memory(device: Any) -> None:
    """After an OOM: drop garbage and, on CUDA, the allocator's cached blocks."""
    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Peak memory

def _libc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def malloc_trim() -> None:
    """glibc only: hand the heap's free pages back to the kernel, so RSS counts live memory."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        try:
            libc.malloc_trim(0)
        except Exception:
            pass


def _status_kib(field_name: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> Optional[int]:
    """Current resident set size (VmRSS), or None where /proc is unavailable."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def max_rss_bytes() -> int:
    """Peak resident set size so far: VmHWM, else getrusage's ru_maxrss."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, /proc/self/clear_refs writable)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager: the peak bytes used by the block above what was held when it started.

        with PeakMemory("cpu") as pm:
            work()
        pm.bytes, pm.method

    On CUDA, torch's allocator statistics; on CPU, resident set size (see the module docstring).
    """

    def __init__(self, device: Any = "cpu"):
        self.device = str(device)
        self.bytes: Optional[int] = None
        self.method = ""
        self._base = 0

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            d = torch.device(self.device)
            torch.cuda.synchronize(d)
            torch.cuda.reset_peak_memory_stats(d)
            self._base = torch.cuda.memory_allocated(d)
            self.method = "cuda_max_memory_allocated"
        else:
            malloc_trim()
            rss = rss_bytes()
            if rss is not None and reset_peak_rss():
                self._base, self.method = rss, "rss_hwm_reset"
            else:  # no reset: the process's lifetime peak, an upper bound
                self._base = rss if rss is not None else max_rss_bytes()
                self.method = "rss_lifetime_peak"
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:  # the work failed: no measurement (bytes stays None)
            return
        if self.device.startswith("cuda"):
            import torch

            d = torch.device(self.device)
            torch.cuda.synchronize(d)
            self.bytes = int(torch.cuda.max_memory_allocated(d) - self._base)
        else:
            self.bytes = int(max(0, max_rss_bytes() - self._base))


# ---------------------------------------------------------------------------------------------
# Isolated worker process


class WorkerDied(RuntimeError):
    """The isolated worker ended without reporting. `oom` is True when it was killed by SIGKILL
    (the kernel's OOM killer's signal) or reported an out-of-memory error."""

    def __init__(self, message: str, oom: bool, stage: Optional[str] = None):
        super().__init__(message)
        self.oom = oom
        self.stage = stage


class WorkerError(RuntimeError):
    """The job raised in the worker; the message is "Type: message" of the original error."""


_PRELOAD = ["torch", "harness.model.lm", "harness.runtime.measure"]


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
    for p in sys_path:
        if p not in sys.path:
            sys.path.append(p)
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
    on_item: Optional[Callable[[Any], None]] = None,
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
    send.close()
    items: list[Any] = []
    stage: Optional[str] = None
    finished = False
    try:
        while True:
            try:
                if not recv.poll(poll_s):
                    if not proc.is_alive() and not recv.poll(0):
                        break
                    continue
                kind, payload = recv.recv()
            except EOFError:
                break
            if kind == "item":
                if isinstance(payload, tuple) and len(payload) == 2 and payload[0] == "stage":
                    stage = payload[1]
                items.append(payload)
                if on_item is not None:
                    on_item(payload)
            elif kind == "done":
                finished = True
                break
            elif kind == "error":
                oom, msg = payload
                if oom:
                    raise MemoryError(msg)
                raise WorkerError(msg)
    finally:
        recv.close()
        if finished:
            proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
        proc.join()
    if not finished:
        code = proc.exitcode
        where = f" during {stage}" if stage else ""
        if code is not None and code < 0:
            sig = -code
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            oom = sig == signal.SIGKILL
            hint = " (probably the kernel's out-of-memory killer)" if oom else ""
            raise WorkerDied(f"measurement worker killed by {name}{hint}{where}", oom=oom, stage=stage)
        raise WorkerDied(f"measurement worker exited with code {code}{where} without reporting", oom=False,
                         stage=stage)
    return items


def worker_available() -> bool:
    """False inside a daemonic process (which may not start children), e.g. a multiprocessing.Pool worker."""
    return not multiprocessing.current_process().daemon
