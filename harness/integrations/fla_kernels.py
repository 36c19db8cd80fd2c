"""flash-linear-attention's Triton kernels as the "fla" backend of our ops (CUDA only;
`pip install -e .[gpu]`; `harness.runtime.devices.resolve_backend` picks it).

The fla wrappers keep our op signatures ([B, T, H, D], log-space gates, [B, H, K, V] fp32 states), so a
variant never knows which backend runs it:

| op, case                  | chunk (training, prefill)             | recurrent (decode)               |
|---------------------------|---------------------------------------|----------------------------------|
| gla, per-channel g        | chunk_gla                             | fused_recurrent_gla              |
| gla, scalar g / none      | chunk_simple_gla                      | fused_recurrent_simple_gla       |
| delta_rule                | chunk_delta_rule                      | fused_recurrent_delta_rule       |
| delta_rule, gated         | chunk_gated_delta_rule                | fused_recurrent_gated_delta_rule |
| kda                       | chunk_kda (gate and beta precomputed) | fused_recurrent_kda              |
| dplr                      | chunk_dplr_delta_rule                 | fused_recurrent_dplr_delta_rule  |
| hgrn                      | chunk_hgrn                            | fused_recurrent_hgrn             |

(fp32 DeltaNet goes through the gated kernels with g = 0: fla's chunk_delta_rule refuses fp32.)
Limits of fla's kernels that the wrappers inherit: the fused_recurrent kernels of GDN, KDA and
DPLR have no backward (decode only), and chunk_hgrn drops the gradient that flows from the
returned final state and to the initial state (training puts neither in the loss, so training is
unaffected).
"""
from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import torch

from harness._lazy import DISTRIBUTION
from harness.ops.dispatch import register_backend_op

_fla_registered = False


def fla_installed() -> bool:
    return importlib.util.find_spec("fla") is not None and importlib.util.find_spec("triton") is not None


def register_fla_ops() -> None:
    """Register fla-kernel wrappers under backend "fla" (imports fla; idempotent)."""
    global _fla_registered
    if _fla_registered:
        return
    fla = _import_kernels()
    for mode, chunk in (("chunk", True), ("recurrent", False)):
        register_backend_op("fla", "gla", mode, _gla(fla, chunk))
        register_backend_op("fla", "delta_rule", mode, _delta_rule(fla, chunk))
        register_backend_op("fla", "kda", mode, _kda(fla, chunk))
        register_backend_op("fla", "dplr", mode, _dplr(fla, chunk))
        register_backend_op("fla", "hgrn", mode, _hgrn(fla, chunk))
    _fla_registered = True


def _import_kernels() -> SimpleNamespace:
    """fla's kernels by name (the wrappers below call them as `fla.<kernel>`)."""
    try:
        from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
        from fla.ops.generalized_delta_rule import chunk_dplr_delta_rule, fused_recurrent_dplr_delta_rule
        from fla.ops.gla import chunk_gla, fused_recurrent_gla
        from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn
        from fla.ops.kda import chunk_kda, fused_recurrent_kda
        from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla
    except ImportError as exc:
        raise ImportError("backend 'fla' needs flash-linear-attention: "
                          f"pip install '{DISTRIBUTION}[gpu]' ({exc})") from exc
    return SimpleNamespace(
        chunk_delta_rule=chunk_delta_rule,
        fused_recurrent_delta_rule=fused_recurrent_delta_rule,
        chunk_gated_delta_rule=chunk_gated_delta_rule,
        fused_recurrent_gated_delta_rule=fused_recurrent_gated_delta_rule,
        chunk_dplr_delta_rule=chunk_dplr_delta_rule,
        fused_recurrent_dplr_delta_rule=fused_recurrent_dplr_delta_rule,
        chunk_gla=chunk_gla,
        fused_recurrent_gla=fused_recurrent_gla,
        chunk_hgrn=chunk_hgrn,
        fused_recurrent_hgrn=fused_recurrent_hgrn,
        chunk_kda=chunk_kda,
        fused_recurrent_kda=fused_recurrent_kda,
        chunk_simple_gla=chunk_simple_gla,
        fused_recurrent_simple_gla=fused_recurrent_simple_gla,
    )


def _state(s: torch.Tensor | None) -> torch.Tensor | None:
    return None if s is None else s.float()


def _gla(fla: SimpleNamespace, chunk: bool):
    def run(q, k, v, g=None, scale=None, initial_state=None):
        kw = dict(scale=scale, initial_state=_state(initial_state), output_final_state=True)
        if g is not None and g.dim() == 4:  # per-channel decay
            if chunk:
                return fla.chunk_gla(q, k, v, g=g, **kw)
            return fla.fused_recurrent_gla(q, k, v, gk=g, **kw)
        fn = fla.chunk_simple_gla if chunk else fla.fused_recurrent_simple_gla
        return fn(q, k, v, g=None if g is None else g.float(), **kw)
    return run


def _delta_rule(fla: SimpleNamespace, chunk: bool):
    def run(q, k, v, beta, g=None, scale=None, initial_state=None):
        kw = dict(scale=scale, initial_state=_state(initial_state), output_final_state=True)
        if g is None and q.dtype != torch.float32:
            fn = fla.chunk_delta_rule if chunk else fla.fused_recurrent_delta_rule
            return fn(q, k, v, beta=beta, **kw)
        if g is None:  # fla's chunk_delta_rule refuses fp32; the gated kernel with g = 0 is the same rule
            g = q.new_zeros(q.shape[:3], dtype=torch.float32)
        fn = fla.chunk_gated_delta_rule if chunk else fla.fused_recurrent_gated_delta_rule
        return fn(q, k, v, g=g.float(), beta=beta, **kw)
    return run


def _kda(fla: SimpleNamespace, chunk: bool):
    # the finished log decay and beta (use_gate_in_kernel / use_beta_sigmoid_in_kernel off),
    # q and k already L2-normalised, the k-first state [B, H, K, V] (state_v_first off)
    def run(q, k, v, beta, g, scale=None, initial_state=None):
        fn = fla.chunk_kda if chunk else fla.fused_recurrent_kda
        return fn(q=q, k=k, v=v, g=g.float(), beta=beta, scale=scale, initial_state=_state(initial_state),
                  output_final_state=True)
    return run


def _dplr(fla: SimpleNamespace, chunk: bool):
    def run(q, k, v, a, b, g=None, scale=None, initial_state=None):
        gk = torch.zeros_like(k, dtype=torch.float32) if g is None else g.float()
        fn = fla.chunk_dplr_delta_rule if chunk else fla.fused_recurrent_dplr_delta_rule
        return fn(q=q, k=k, v=v, a=a, b=b, gk=gk, scale=scale,
                  initial_state=_state(initial_state), output_final_state=True)
    return run


def _hgrn(fla: SimpleNamespace, chunk: bool):
    def run(x, g, initial_state=None):
        fn = fla.chunk_hgrn if chunk else fla.fused_recurrent_hgrn
        return fn(x, g.to(x.dtype), initial_state=_state(initial_state), output_final_state=True)
    return run
