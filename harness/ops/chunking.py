"""Shared plumbing of the chunkwise forms: pad time to whole chunks and split into chunks."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def split_chunks(chunk_size: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """View each [B, T, H, ...] tensor as [B, H, N, C, ...] chunks of C = chunk_size steps.

    T is zero-padded to a multiple of C first. The padding is exact for the recurrences here:
    a zero key, value, beta and log gate leaves the state untouched, and padded outputs are cut.
    """
    C = chunk_size
    pad = (-tensors[0].shape[1]) % C
    out = []
    for t in tensors:
        if pad:
            t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
        B, T, H = t.shape[:3]
        out.append(t.reshape(B, T // C, C, H, *t.shape[3:]).movedim(3, 1))
    return out
