"""Short causal depthwise convolution (fla's ShortConvolution) with a streaming cache.

Width-4 depthwise convs are a few multiply-adds per channel, so the default path is elementwise:
one `mul` + `sum` over the cached tail for a decode step (T = 1), and a chain of W `addcmul`s over
shifted views for T > 1 (forward + backward faster than oneDNN's conv1d at these sizes, measured
in scripts/bench_hot_paths.py). `impl="conv1d"` keeps the F.conv1d form, the reference the tests
hold the elementwise paths to.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IMPLS = ("auto", "elementwise", "conv1d")


def short_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    cache: torch.Tensor | None = None,
    activation: str | None = "silu",
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """y_t = act(sum_j weight[:, j] * x_{t - W + 1 + j}), x [B, T, D], weight [D, W].

    `cache` holds the previous W - 1 inputs [B, W - 1, D] (zeros at the start of a sequence);
    the returned cache is the last W - 1 inputs, so decode is the same call with T = 1.
    """
    if activation not in ("silu", None):
        raise ValueError(f"unsupported activation {activation!r}")
    if impl not in IMPLS:
        raise ValueError(f"unknown short_conv impl {impl!r}; expected one of {IMPLS}")
    B, T, D = x.shape
    W = weight.shape[-1]
    if cache is None:
        xp = F.pad(x, (0, 0, W - 1, 0))
    else:
        xp = torch.cat([cache if cache.dtype == x.dtype else cache.to(x.dtype), x], dim=1)
    if impl == "conv1d":
        y = F.conv1d(xp.transpose(1, 2), weight.unsqueeze(1), bias, groups=D).transpose(1, 2)
    elif T == 1:  # decode step: one dot product of width W per channel
        y = (xp * weight.t()).sum(1, keepdim=True)
        if bias is not None:
            y = y + bias
    else:
        y = xp[:, :T] * weight[:, 0]
        for j in range(1, W):
            y = torch.addcmul(y, xp[:, j : j + T], weight[:, j])
        if bias is not None:
            y = y + bias
    if activation == "silu":
        y = F.silu(y)
    return y, xp[:, xp.shape[1] - (W - 1):]
