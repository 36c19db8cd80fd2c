"""Short causal depthwise convolution (fla's ShortConvolution) with a streaming cache."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def short_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    cache: Optional[torch.Tensor] = None,
    activation: Optional[str] = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """y_t = act(sum_j weight[:, j] * x_{t - W + 1 + j}), x [B, T, D], weight [D, W].

    `cache` holds the previous W - 1 inputs [B, W - 1, D] (zeros at the start of a sequence);
    the returned cache is the last W - 1 inputs, so decode is the same call with T = 1.
    """
    B, T, D = x.shape
    W = weight.shape[-1]
    if cache is None:
        cache = x.new_zeros(B, W - 1, D)
    xp = torch.cat([cache.to(x.dtype), x], dim=1)
    y = F.conv1d(xp.transpose(1, 2), weight.unsqueeze(1), bias, groups=D).transpose(1, 2)
    if activation == "silu":
        y = F.silu(y)
    elif activation is not None:
        raise ValueError(f"unsupported activation {activation!r}")
    return y, xp[:, xp.shape[1] - (W - 1):]
