"""Pick the implementation of a recurrence family for a mode ("chunk" / "recurrent") and a backend.

The torch backend is ours (harness.ops). Other backends (fla's Triton kernels) register wrappers
with the same signature through `register_backend_op`, so variants never change.
"""
from __future__ import annotations

from collections.abc import Callable

from harness.ops.delta_rule import chunk_delta_rule, recurrent_delta_rule
from harness.ops.dplr import chunk_dplr, dplr_step, recurrent_dplr
from harness.ops.gla import chunk_gla, recurrent_gla
from harness.ops.hgrn import chunk_hgrn, recurrent_hgrn
from harness.ops.kda import chunk_kda, kda_step, recurrent_kda
from harness.ops.step import delta_rule_step, gla_step, hgrn_step

#: gla: linear attention with decay (RetNet, GLA, HGRN-2, Mamba-2); delta_rule: the delta rule
#: with a scalar decay (DeltaNet, Gated DeltaNet); kda: with a per-channel decay (KDA); dplr: the
#: generalised delta rule (RWKV-7); hgrn: the elementwise recurrence (HGRN)
FAMILIES = ("gla", "delta_rule", "kda", "dplr", "hgrn")

_OPS: dict[tuple[str, str, str], Callable] = {
    ("torch", "gla", "chunk"): chunk_gla,
    ("torch", "gla", "recurrent"): recurrent_gla,
    ("torch", "delta_rule", "chunk"): chunk_delta_rule,
    ("torch", "delta_rule", "recurrent"): recurrent_delta_rule,
    ("torch", "kda", "chunk"): chunk_kda,
    ("torch", "kda", "recurrent"): recurrent_kda,
    ("torch", "dplr", "chunk"): chunk_dplr,
    ("torch", "dplr", "recurrent"): recurrent_dplr,
    ("torch", "hgrn", "chunk"): chunk_hgrn,
    ("torch", "hgrn", "recurrent"): recurrent_hgrn,
    # one-token twins of the recurrent ops (decode); `get_op(..., seq_len=1)` picks them
    ("torch", "gla", "step"): gla_step,
    ("torch", "delta_rule", "step"): delta_rule_step,
    ("torch", "kda", "step"): kda_step,
    ("torch", "dplr", "step"): dplr_step,
    ("torch", "hgrn", "step"): hgrn_step,
}


def register_backend_op(backend: str, family: str, mode: str, fn: Callable) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown op family {family!r}; known: {FAMILIES}")
    _OPS[(backend, family, mode)] = fn


def get_op(family: str, mode: str, backend: str = "torch", seq_len: int | None = None) -> Callable:
    """The op for (backend, family, mode). In mode "recurrent" with `seq_len == 1` (a decode step),
    the backend's one-token "step" op when it has one (the torch backend's harness.ops.step)."""
    if mode == "recurrent" and seq_len == 1:
        fn = _OPS.get((backend, family, "step"))
        if fn is not None:
            return fn
    try:
        return _OPS[(backend, family, mode)]
    except KeyError:
        have = sorted({b for b, *_ in _OPS})
        raise ValueError(
            f"no {backend!r} implementation of {family!r} in mode {mode!r} (backends: {have})"
        ) from None
