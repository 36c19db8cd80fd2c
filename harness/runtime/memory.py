"""Peak memory (`PeakMemory`): the extra bytes a piece of work needs above what was held before it.

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
  (`harness.runtime.isolate.run_isolated`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
from typing import Any


def _libc() -> ctypes.CDLL | None:
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


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
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
        self.bytes: int | None = None
        self.method = ""
        self._base = 0

    def __enter__(self) -> PeakMemory:
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
