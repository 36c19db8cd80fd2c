"""The opening every recurrence shares: dtypes, the q scale, shapes and the initial state.

All ops compute in an accumulation dtype (fp32 for half inputs; fp32 and fp64 stay as given, so
tests can hold fp64 paths to 1e-9) and return outputs in the value dtype and states in the
accumulation dtype, as fla does.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

_ACC = {torch.float32: torch.float32, torch.float64: torch.float64, torch.float16: torch.float32,
        torch.bfloat16: torch.float32}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least fp32 (a dict lookup: torch.promote_types goes through the dispatcher, and the
    decode path counts microseconds)."""
    acc = _ACC.get(dtype)
    return acc if acc is not None else torch.promote_types(dtype, torch.float32)


def to_acc(t: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """t in `acc`, without a call when it already is."""
    return t if t.dtype == acc else t.to(acc)


class Prepared(NamedTuple):
    """q (scaled), k, v and the initial state S [B, H, K, V] in the accumulation dtype."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    S: torch.Tensor
    dtype: torch.dtype  # the output's (the value input's) dtype
    acc: torch.dtype


def prepare_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None,
                initial_state: torch.Tensor | None) -> Prepared:
    """q, k [B, T, H, K] and v [B, T, H, V] in the accumulation dtype, q times `scale` (default
    K^-0.5), and the initial state (zeros without one)."""
    B, _, H, K = q.shape
    dtype = v.dtype
    acc = acc_dtype(dtype)
    scale = K**-0.5 if scale is None else scale
    q, k, v = to_acc(q, acc) * scale, to_acc(k, acc), to_acc(v, acc)
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else to_acc(initial_state, acc)
    return Prepared(q, k, v, S, dtype, acc)
