"""Run fla's Triton kernels on the CPU under Triton's interpreter (test-only; fp32, tiny shapes).

Call `enable()` before anything imports triton or fla (so: in a fresh subprocess). It sets
TRITON_INTERPRET=1 and applies the two patches fla-notes.md §2 describes:
1. the autotuner keeps only its first config (it would otherwise ask the absent GPU driver for a
   benchmarker);
2. while an interpreted kernel runs, `range` in the kernel's globals yields interpreter tensors
   instead of Python ints (fla's kernels call `.to(tl.int64)` on loop counters), and a
   module-level alias of `tl.gather` (fla's `fla.ops.utils.op.gather`, used by the DPLR kernels)
   resolves to the interpreter's patched `tl.gather` (the interpreter patches the `tl` module's
   attributes, not aliases bound at import).
"""
from __future__ import annotations

import builtins
import os


def enable() -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    import triton.runtime.autotuner as autotuner
    import triton.runtime.interpreter as interp

    def first_config_only(self, kwargs):
        return self.configs[:1]

    autotuner.Autotuner.prune_configs = first_config_only

    def as_int(v):
        if isinstance(v, interp.tl.tensor):
            return int(v.handle.data.item())
        if isinstance(v, interp.tl.constexpr):
            return int(v.value)
        return v

    def tensor_range(*args):
        for i in builtins.range(*(as_int(a) for a in args)):
            yield interp._implicit_cvt(i)

    import triton.language as tl

    original_gather = getattr(tl, "gather", None)

    def gather_at_call_time(*args, **kwargs):
        return tl.gather(*args, **kwargs)

    original_call = interp.GridExecutor.__call__
    if getattr(original_call, "_harness_patched", False):  # enable() twice: patch once
        return

    def call_with_tensor_range(self, *args, **kwargs):
        g = self.fn.__globals__
        had, old = "range" in g, g.get("range")
        g["range"] = tensor_range
        aliased = original_gather is not None and g.get("gather") is original_gather
        if aliased:
            g["gather"] = gather_at_call_time
        try:
            return original_call(self, *args, **kwargs)
        finally:
            if had:
                g["range"] = old
            else:
                g.pop("range", None)
            if aliased:
                g["gather"] = original_gather

    call_with_tensor_range._harness_patched = True  # type: ignore[attr-defined]
    interp.GridExecutor.__call__ = call_with_tensor_range
