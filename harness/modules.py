"""Small building blocks shared by the variants and the model (norms, rotary, short conv, MLP).

Parameter names and shapes follow fla's modules so checkpoints map one-to-one.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from harness.ops import short_conv


def _acc(x: torch.Tensor) -> torch.dtype:
    """At least fp32 for normalisation statistics (fp64 stays fp64, for exact tests)."""
    return torch.promote_types(x.dtype, torch.float32)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Gates and decays are computed in fp32 (or fp64 when the model is fp64)."""
    return x.to(_acc(x))


class RMSNorm(nn.Module):
    """fla's RMSNorm: x * rsqrt(mean(x^2) + eps) * weight, computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(_acc(x))
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(y.dtype)).to(x.dtype)


class GatedRMSNorm(RMSNorm):
    """fla's FusedRMSNormGated: RMSNorm(x) * act(gate), act = swish (default) or sigmoid."""

    def __init__(self, dim: int, eps: float = 1e-5, activation: str = "swish"):
        super().__init__(dim, eps)
        if activation not in ("swish", "silu", "sigmoid"):
            raise ValueError(f"unsupported gate activation {activation!r}")
        self.activation = activation

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = gate.to(_acc(gate))
        g = torch.sigmoid(g) if self.activation == "sigmoid" else F.silu(g)
        return (super().forward(x).to(g.dtype) * g).to(x.dtype)


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """fla's l2norm (use_qk_l2norm_in_kernel): x / sqrt(sum(x^2) + eps) over the last dim."""
    xf = x.to(_acc(x))
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


class ShortConv(nn.Module):
    """Depthwise causal conv (fla ShortConvolution); weight [D, 1, W] like nn.Conv1d's."""

    def __init__(self, dim: int, kernel_size: int = 4, bias: bool = False, activation: Optional[str] = "silu"):
        super().__init__()
        self.dim, self.kernel_size, self.activation = dim, kernel_size, activation
        self.weight = nn.Parameter(torch.empty(dim, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        if self.weight.device.type != "meta":
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv1d's default

    def forward(self, x: torch.Tensor, cache: Optional[torch.Tensor] = None):
        return short_conv(x, self.weight[:, 0], self.bias, cache=cache, activation=self.activation)

    def cache_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.kernel_size - 1, self.dim)


def rotary(x: torch.Tensor, offset: int, theta: float = 10000.0) -> torch.Tensor:
    """Non-interleaved rotary embedding (fla / flash-attn default) on x [B, T, H, D]."""
    T, D = x.shape[1], x.shape[-1]
    half = D // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, half, device=x.device, dtype=_acc(x)) * 2 / D))
    pos = torch.arange(offset, offset + T, device=x.device, dtype=_acc(x))
    freqs = torch.outer(pos, inv_freq)  # [T, half]
    cos, sin = freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]
    xf = x.to(_acc(x))
    x1, x2 = xf[..., :half], xf[..., half : 2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, xf[..., 2 * half :]], dim=-1)
    return out.to(x.dtype)


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
