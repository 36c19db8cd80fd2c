"""fla's pure-PyTorch reference ops (`fla/ops/*/naive.py`), called with our op conventions.

The mixer-level efficiency task (harness.tasks.mixer_efficiency) times them beside our chunked
ops on the very inputs a layer passes to its op, as the external baseline of an op benchmark
(fla's own `benchmarks/ops` compare its kernels with these). Which reference serves which call
(our conventions: [B, T, H, D], log-space gates; see harness.ops.dispatch for the families):

- gla, none or scalar g: `simple_gla.naive.naive_chunk_simple_gla` (chunked);
- gla, per-channel g: `gla.naive.naive_recurrent_gla` (step loop);
- delta_rule, no g: `delta_rule.naive.delta_rule_chunkwise` ([B, H, T, D], T % 32 == 0; chunked);
- delta_rule, scalar g: `gated_delta_rule.naive.naive_chunk_gated_delta_rule` (g before beta; chunked);
- kda: `kda.naive.naive_chunk_kda` (T % 64 == 0; chunked), else `naive_recurrent_kda` (step loop);
- dplr: `generalized_delta_rule.dplr.naive.dplr_chunkwise` ([B, H, T, D], T % 32 == 0; chunked), else
  `dplr_recurrence` (step loop);
- hgrn: `hgrn.naive.naive_recurrent_hgrn` (step loop).

fla has no chunked pure-PyTorch form of per-channel GLA, and `naive_chunk_hgrn` only works
when T equals its chunk size, so those two are step loops (slow in backward: they write the
output token by token in place). The references that fix the scale at K^-0.5
(`naive_recurrent_gla`, `delta_rule_chunkwise`, the dplr ones) get q rescaled so that the output is
the same as ours for any `scale`; tests/test_mixer_efficiency.py holds every mapping equal to our op.
"""
from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from harness.ops.dispatch import get_op


class Reference(NamedTuple):
    name: str  # the fla function, e.g. "naive_chunk_simple_gla"
    stepwise: bool  # a token-by-token loop (slow; measured only up to a length limit)
    fn: Callable[..., torch.Tensor]  # (**op_kwargs) -> o [B, T, H, V] (hgrn: [B, T, D])


def fla_available() -> bool:
    return importlib.util.find_spec("fla") is not None


def _quiet_import(module: str, name: str) -> Callable:
    """fla's function `name` from `module`, without fla's "Triton is not supported on current
    platform" warning on a CPU-only machine (expected here: these references are plain torch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module(module), name)


def op_kwargs(family: str, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call of a `family` op as keyword arguments, by the torch chunk op's signature."""
    sig = inspect.signature(get_op(family, "chunk", "torch"))
    return dict(sig.bind(*args, **kwargs).arguments)


def _rescaled_q(q: torch.Tensor, scale: float | None) -> torch.Tensor:
    """q such that a reference with the fixed scale K^-0.5 computes our `scale`."""
    if scale is None:
        return q
    return q * (scale / q.shape[-1] ** -0.5)


def fla_reference(family: str, kw: dict[str, Any]) -> Reference | None:
    """fla's naive reference for this op call (keyword arguments as `op_kwargs` gives them), or
    None when fla is not installed or has no reference for it (e.g. an initial state)."""
    if not fla_available() or kw.get("initial_state") is not None:
        return None
    T = kw["x" if family == "hgrn" else "q"].shape[1]
    make = _REFERENCES.get(family)
    return make(kw, T) if make is not None else None


def _gla_reference(kw: dict[str, Any], T: int) -> Reference:
    g = kw.get("g")
    if g is None or g.dim() == 3:
        naive_chunk_simple_gla = _quiet_import("fla.ops.simple_gla.naive", "naive_chunk_simple_gla")

        def simple(q, k, v, g=None, scale=None, **_):
            g = torch.zeros(q.shape[:3], dtype=torch.float32, device=q.device) if g is None else g
            return naive_chunk_simple_gla(q, k, v, g, scale=scale)[0]

        return Reference("naive_chunk_simple_gla", False, simple)
    naive_recurrent_gla = _quiet_import("fla.ops.gla.naive", "naive_recurrent_gla")

    def per_channel(q, k, v, g, scale=None, **_):
        return naive_recurrent_gla(_rescaled_q(q, scale), k, v, g)[0]

    return Reference("naive_recurrent_gla", True, per_channel)


def _delta_rule_reference(kw: dict[str, Any], T: int) -> Reference | None:
    if kw.get("g") is None:
        if T % 32:
            return None
        delta_rule_chunkwise = _quiet_import("fla.ops.delta_rule.naive", "delta_rule_chunkwise")

        def plain(q, k, v, beta, scale=None, **_):
            def t(x):
                return x.transpose(1, 2)  # [B, T, H, D] -> [B, H, T, D]
            return t(delta_rule_chunkwise(t(_rescaled_q(q, scale)), t(k), t(v), t(beta))[0])

        return Reference("delta_rule_chunkwise", False, plain)
    naive_chunk_gated_delta_rule = _quiet_import("fla.ops.gated_delta_rule.naive", "naive_chunk_gated_delta_rule")

    def gated(q, k, v, beta, g, scale=None, **_):
        return naive_chunk_gated_delta_rule(q, k, v, g, beta, scale=scale)[0]

    return Reference("naive_chunk_gated_delta_rule", False, gated)


def _kda_reference(kw: dict[str, Any], T: int) -> Reference:
    chunked = T % 64 == 0
    fn = _quiet_import("fla.ops.kda.naive", "naive_chunk_kda" if chunked else "naive_recurrent_kda")

    def kda(q, k, v, beta, g, scale=None, **_):
        return fn(q, k, v, g, beta, scale=scale)[0]

    return Reference(fn.__name__, not chunked, kda)


def _dplr_reference(kw: dict[str, Any], T: int) -> Reference:
    chunked = T % 32 == 0
    fn = _quiet_import("fla.ops.generalized_delta_rule.dplr.naive",
                       "dplr_chunkwise" if chunked else "dplr_recurrence")

    def dplr(q, k, v, a, b, g=None, scale=None, **_):
        # [B, T, H, D] -> [B, H, T, D], in fp32: these references hard-code float for some inputs
        t = lambda x: x.transpose(1, 2).float()  # noqa: E731
        g = torch.zeros_like(k) if g is None else g
        return t(fn(t(_rescaled_q(q, scale)), t(k), t(v), t(a), t(b), t(g))[0]).to(v.dtype)

    return Reference(fn.__name__, not chunked, dplr)


def _hgrn_reference(kw: dict[str, Any], T: int) -> Reference:
    naive_recurrent_hgrn = _quiet_import("fla.ops.hgrn.naive", "naive_recurrent_hgrn")

    def hgrn(x, g, **_):
        return naive_recurrent_hgrn(x, g)[0]

    return Reference("naive_recurrent_hgrn", True, hgrn)


#: family -> (op keyword arguments, sequence length) -> its reference (None: none for this call)
_REFERENCES: dict[str, Callable[[dict[str, Any], int], Reference | None]] = {
    "gla": _gla_reference, "delta_rule": _delta_rule_reference, "kda": _kda_reference, "dplr": _dplr_reference,
    "hgrn": _hgrn_reference,
}
