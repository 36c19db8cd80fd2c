"""Gated vector recurrence (HGRN): h_t = exp(g_t) * h_{t-1} + x_t, output o_t = h_t.

Shapes follow fla's `fused_recurrent_hgrn`: x, g are [B, T, D]; g is the log forget gate (<= 0);
the state is [B, D]. The layer folds the input gate in beforehand (x = swish(i) * (1 - f)).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from harness.ops.chunking import blockwise, resolve_block, wants_blocks


def recurrent_hgrn(
    x: torch.Tensor, g: torch.Tensor, initial_state: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step reference; also the decode path."""
    dtype = x.dtype
    acc = torch.promote_types(dtype, torch.float32)  # fp32 for half inputs, else as given
    x, g = x.to(acc), g.to(acc)
    h = x.new_zeros(x.shape[0], x.shape[2]) if initial_state is None else initial_state.to(acc)
    outs = []
    for x_t, a_t in zip(x.unbind(1), g.exp().unbind(1)):  # unbind: see recurrent_gla
        h = a_t * h + x_t
        outs.append(h)
    return torch.stack(outs, 1).to(dtype), h


def chunk_hgrn(
    x: torch.Tensor,
    g: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    chunk_size: int = 16,
    checkpoint_block: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise form: inside a chunk, o_t = sum_{s<=t} exp(G_t - G_s) x_s + exp(G_t) h_0 with G the
    in-chunk cumulative log gate; differences G_t - G_s (s <= t) are <= 0, so nothing overflows.

    In training (grad enabled), time is cut into blocks of `checkpoint_block` tokens (default
    harness.ops.chunking.CHECKPOINT_BLOCK; 0 = off) that are recomputed in backward, so only the
    inputs and block-boundary states are kept (see harness.ops.chunking.blockwise)."""
    block = resolve_block(checkpoint_block, chunk_size)
    if wants_blocks(block, x.shape[1], x, g, initial_state):
        return blockwise(lambda x, g, h: _chunk_hgrn(x, g, h, chunk_size), (x, g), initial_state, block)
    return _chunk_hgrn(x, g, initial_state, chunk_size)


def _chunk_hgrn(
    x: torch.Tensor, g: torch.Tensor, initial_state: Optional[torch.Tensor], chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, D = x.shape
    dtype = x.dtype
    acc = torch.promote_types(dtype, torch.float32)  # fp32 for half inputs, else as given
    C = chunk_size
    pad = (-T) % C
    x, g = x.to(acc), g.to(acc)
    if pad:  # zero input and zero log-gate leave the state untouched
        x = F.pad(x, (0, 0, 0, pad))
        g = F.pad(g, (0, 0, 0, pad))
    N = x.shape[1] // C
    xc, gc = x.view(B, N, C, D), g.view(B, N, C, D)
    G = gc.cumsum(2)
    # exp(G_t - G_s) for s <= t (<= 0 since log gates are <= 0); the clamp only tames s > t,
    # which the causal mask then zeroes
    causal = torch.ones(C, C, dtype=x.dtype, device=x.device).tril()
    decay = (G.unsqueeze(3) - G.unsqueeze(2)).clamp(max=0).exp() * causal[:, :, None]  # [B, N, t, s, D]
    intra = torch.einsum("bntsd,bnsd->bntd", decay, xc)
    h = x.new_zeros(B, D) if initial_state is None else initial_state.to(acc)
    starts = []  # the state entering each chunk (unbind: no per-chunk indexing under autograd)
    for last_n, g_last_n in zip(intra[:, :, -1].unbind(1), G[:, :, -1].exp().unbind(1)):
        starts.append(h)
        h = last_n + g_last_n * h
    o = intra + G.exp() * torch.stack(starts, 1).unsqueeze(2)
    o = o.reshape(B, N * C, D)[:, :T]
    return o.to(dtype), h
