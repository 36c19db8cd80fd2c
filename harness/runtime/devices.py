"""Devices, backends and out-of-memory errors: which device "auto" means, which backend runs the
recurrences on it, what counts as out of memory, and freeing cached memory after one (one
definition each, for every task and executor). Importing it does not import torch.

Backends: "torch" (harness.ops, runs anywhere) and "fla" (flash-linear-attention's Triton
kernels, CUDA only: harness.integrations.fla_kernels); "auto" is fla on CUDA when fla is
installed, else torch.
"""
from __future__ import annotations

import gc
import os
import sys
from typing import Any

BACKENDS = ("auto", "torch", "fla")


def resolve_device(device: str) -> str:
    """The device a cell runs on: "auto" is cuda when available, else mps, else cpu."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def device_problem(device: str) -> str | None:
    """Why `device` cannot run here, in one sentence with what to do; None when it can."""
    if device in ("cpu", "auto"):
        return None
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            why = ("built without CUDA" if torch.version.cuda is None
                   else f"built for CUDA {torch.version.cuda}, but no GPU is visible")
            return (f"device {device!r} is not available on this machine (torch {torch.__version__} is {why}); "
                    f"run on a machine with a GPU, or choose --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            return (f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s), "
                    f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return None
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "device 'mps' (Apple GPU) is not available on this machine; choose --device cpu"
    return None


def is_oom(exc: BaseException) -> bool:
    """True for out-of-memory errors: torch's OutOfMemoryError (and Ray's), MemoryError, torch's
    CPU allocator failure, or any error whose message says "out of memory"."""
    names = {c.__name__ for c in type(exc).__mro__}
    msg = str(exc).lower()
    return (
        "OutOfMemoryError" in names
        or isinstance(exc, MemoryError)
        or "out of memory" in msg
        or "can't allocate memory" in msg
        or "cannot allocate memory" in msg
    )


def exception_status(exc: BaseException) -> str:
    """A failed cell's status: "oom" for out-of-memory errors, else "failed"."""
    return "oom" if is_oom(exc) else "failed"


def free_device_memory(device: Any = None) -> None:
    """After an OOM: drop garbage and, on CUDA (`device` cuda, or None when CUDA is in use),
    the allocator's cached blocks, so the next measurement does not inherit them."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if (device is None and torch.cuda.is_available() and torch.cuda.is_initialized()) or str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def resolve_backend(backend: str, device: Any) -> str:
    """The backend that will actually run on `device` ("auto": fla on CUDA when fla is installed);
    registers fla's kernels when it is fla. Raises for an unknown or unusable backend."""
    import torch

    from harness.integrations.fla_kernels import fla_installed, register_fla_ops

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    is_cuda = torch.device(device).type == "cuda"
    if backend == "auto":
        backend = "fla" if is_cuda and fla_installed() else "torch"
    elif backend == "fla":
        if not fla_installed():
            raise RuntimeError("backend 'fla' needs flash-linear-attention: pip install -e '.[gpu]'")
        if not is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"backend 'fla' runs Triton kernels, which need a CUDA device (got {device!r}); "
                "use backend 'torch' or 'auto' on the CPU (TRITON_INTERPRET=1 is for tiny tests only)"
            )
    if backend == "fla":
        register_fla_ops()
    return backend


def machine_info() -> dict[str, Any]:
    """What a benchmark records of the machine it ran on: platform, Python, torch, cores, CPU."""
    import platform

    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "cpu": cpu}
