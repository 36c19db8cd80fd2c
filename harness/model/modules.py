"""Small building blocks shared by the variants and the model (norms, rotary, short conv, MLP).

Parameter names and shapes follow fla's modules so checkpoints map one-to-one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.ops import short_conv
from harness.ops.prelude import acc_dtype
from harness.ops.prelude import to_acc as cast  # x.to(dtype) without the call when it already is


def init_dt_bias(n: int) -> torch.Tensor:
    """fla's (mamba_ssm's) time-step bias: dt log-uniform in [1e-3, 0.1] (floored at 1e-4), stored
    as its inverse softplus, so softplus(dt_bias) = dt at initialisation."""
    dt = torch.exp(torch.rand(n) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Gates, decays and normalisation statistics are computed in fp32 (or fp64 when the model is
    fp64, for exact tests)."""
    return cast(x, acc_dtype(x.dtype))


def _rms_scaled(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) * weight in at least fp32 (returned in that dtype)."""
    y = cast(x, acc_dtype(x.dtype))
    r = torch.rsqrt(y.pow(2).mean(-1, keepdim=True).add_(eps))
    return y * r * cast(weight, y.dtype)


class RMSNorm(nn.Module):
    """fla's RMSNorm: x * rsqrt(mean(x^2) + eps) * weight, computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(_rms_scaled(x, self.weight, self.eps), x.dtype)


class GatedRMSNorm(RMSNorm):
    """fla's FusedRMSNormGated: RMSNorm(x) * act(gate), act = swish (default) or sigmoid."""

    def __init__(self, dim: int, eps: float = 1e-5, activation: str = "swish"):
        super().__init__(dim, eps)
        if activation not in ("swish", "silu", "sigmoid"):
            raise ValueError(f"unsupported gate activation {activation!r}")
        self.activation = activation

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = cast(gate, acc_dtype(gate.dtype))
        g = torch.sigmoid(g) if self.activation == "sigmoid" else F.silu(g)
        y = cast(cast(_rms_scaled(x, self.weight, self.eps), x.dtype), g.dtype)
        return cast(y * g, x.dtype)


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """fla's l2norm (use_qk_l2norm_in_kernel): x / sqrt(sum(x^2) + eps) over the last dim."""
    xf = cast(x, acc_dtype(x.dtype))
    return cast(xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True).add_(eps)), x.dtype)


# Why a generation counter as well as `_version`: fused optimizers (AdamW(fused=True), which
# harness.runtime.train uses) update weights in place WITHOUT bumping `_version`, so a cache checked by
# version alone served step-50 weights to every later evaluation (the model trained, the score
# stayed at chance). Training needs a grad-enabled forward before every update, so any such
# forward through a ShortConv invalidates every cache in the process.
_GRAD_FORWARDS = 0


def _note_grad_forward() -> None:
    global _GRAD_FORWARDS
    if torch.compiler.is_compiling():  # a compiled graph keeps no Python-side cache (and a
        return  # counter in its guards would recompile on every step)
    _GRAD_FORWARDS += 1


def _fused_weight(mods) -> torch.Tensor | None:
    """torch.cat of the modules' `weight`s (dim 0; None when one has a bias), for the joint decode
    step of a mixer's short convs (Mixer._joint_conv_step); cached on the first module while every weight
    is the same tensor at the same version (an in-place update bumps `_version`) and no
    grad-enabled forward has run since (see _GRAD_FORWARDS)."""
    if torch.compiler.is_compiling():  # a compiled graph concatenates itself; no Python-side cache
        if any(getattr(m, "bias", None) is not None for m in mods):
            return None
        return torch.cat([m.weight for m in mods], 0)
    hit = mods[0].__dict__.get("_fused_cache")
    if hit is not None and hit[4] == _GRAD_FORWARDS and len(hit[0]) == len(mods) and all(
        m._parameters["weight"] is w and w._version == v for m, w, v in zip(mods, hit[0], hit[1])
    ):
        return hit[2]
    ws = [m._parameters["weight"] for m in mods]
    biased = any(getattr(m, "bias", None) is not None for m in mods)
    W = None if biased else torch.cat([w.detach() for w in ws], 0)
    mods[0].__dict__["_fused_cache"] = (ws, [w._version for w in ws], W, [w.shape[0] for w in ws],
                                        _GRAD_FORWARDS)
    return W


class ShortConv(nn.Module):
    """Depthwise causal conv (fla ShortConvolution); weight [D, 1, W] like nn.Conv1d's."""

    def __init__(self, dim: int, kernel_size: int = 4, bias: bool = False, activation: str | None = "silu"):
        super().__init__()
        self.dim, self.kernel_size, self.activation = dim, kernel_size, activation
        self.weight = nn.Parameter(torch.empty(dim, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv1d's default; a no-op on meta

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None):
        if torch.is_grad_enabled():
            _note_grad_forward()
        return short_conv(x, self.weight[:, 0], self.bias, cache=cache, activation=self.activation)

    def cache_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.kernel_size - 1, self.dim)


_INV_FREQ: dict = {}


def _rotary_cos_sin(x: torch.Tensor, offset: int, theta: float):
    T, D = x.shape[1], x.shape[-1]
    acc = acc_dtype(x.dtype)
    key = (D, theta, x.device, acc)
    inv_freq = None if torch.compiler.is_compiling() else _INV_FREQ.get(key)  # no dict in the guards
    if inv_freq is None:
        inv_freq = 1.0 / (theta ** (torch.arange(0, D // 2, device=x.device, dtype=acc) * 2 / D))
        if not torch.compiler.is_compiling():
            _INV_FREQ[key] = inv_freq
    if T == 1:  # decode: one position, no arange / outer
        freqs = (inv_freq * offset)[None]
    else:
        freqs = torch.outer(torch.arange(offset, offset + T, device=x.device, dtype=acc), inv_freq)  # [T, half]
    return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = cos.shape[-1]
    xf = cast(x, cos.dtype)
    x1, x2 = xf[..., :half], xf[..., half : 2 * half]
    parts = [x1 * cos - x2 * sin, x1 * sin + x2 * cos]
    if xf.shape[-1] > 2 * half:
        parts.append(xf[..., 2 * half :])
    return cast(torch.cat(parts, dim=-1), x.dtype)


def rotary(x: torch.Tensor, offset: int, theta: float = 10000.0) -> torch.Tensor:
    """Non-interleaved rotary embedding (fla / flash-attn default) on x [B, T, H, D]."""
    return _apply_rotary(x, *_rotary_cos_sin(x, offset, theta))


def rotary_pair(q: torch.Tensor, k: torch.Tensor, offset: int, theta: float = 10000.0):
    """`rotary` on q and k (same T and head dim), computing the angles once; for one token
    (decode) on q and k stacked along the heads, one pass instead of two."""
    cos, sin = _rotary_cos_sin(q, offset, theta)
    if q.shape[1] == 1 and q.dtype == k.dtype:
        return _apply_rotary(torch.cat([q, k], 2), cos, sin).split([q.shape[2], k.shape[2]], 2)
    return _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)


def l2norm_pair(q: torch.Tensor, k: torch.Tensor, eps: float = 1e-6):
    """(l2norm(q), l2norm(k)) for [B, T, H, D] q, k; for one token (decode) in one pass over
    both stacked along the heads (the same numbers: the norm is per head)."""
    if q.shape[1] == 1 and q.dtype == k.dtype and q.shape[-1] == k.shape[-1]:
        return l2norm(torch.cat([q, k], 2), eps).split([q.shape[2], k.shape[2]], 2)
    return l2norm(q, eps), l2norm(k, eps)


class SwiGLU(nn.Module):
    """fla's GatedMLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x.unflatten(-1, (x.shape[-1] // head_dim, head_dim))
