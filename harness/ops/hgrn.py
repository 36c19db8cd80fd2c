"""Gated vector recurrence (HGRN): h_t = exp(g_t) * h_{t-1} + x_t, output o_t = h_t.

Shapes follow fla's `fused_recurrent_hgrn`: x, g are [B, T, D]; g is the log forget gate (<= 0);
the state is [B, D]. The layer folds the input gate in beforehand (x = swish(i) * (1 - f)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.ops.chunking import run_chunked
from harness.ops.prelude import acc_dtype, to_acc


def recurrent_hgrn(
    x: torch.Tensor, g: torch.Tensor, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step reference; also the decode path."""
    dtype = x.dtype
    acc = acc_dtype(dtype)  # fp32 for half inputs, else as given
    x, g = to_acc(x, acc), to_acc(g, acc)
    h = x.new_zeros(x.shape[0], x.shape[2]) if initial_state is None else to_acc(initial_state, acc)
    outs = []
    for x_t, a_t in zip(x.unbind(1), g.exp().unbind(1)):  # unbind: see recurrent_gla
        h = a_t * h + x_t
        outs.append(h)
    return torch.stack(outs, 1).to(dtype), h


def chunk_hgrn(x: torch.Tensor, g: torch.Tensor, initial_state: torch.Tensor | None = None,
               chunk_size: int = 64, checkpoint_block: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise form: inside each chunk of `chunk_size` tokens, a doubling (Hillis-Steele) scan
    of the pairs (a_t, x_t) with a_t = exp(g_t) composes h_t = a_t h_{t-1} + x_t for every t in
    log2(chunk_size) elementwise steps; chunk-start states are carried across chunks one step
    per chunk. Every factor is a product of gates in (0, 1]: nothing overflows, nothing is
    divided. (Timings: reports/benchmarks/ops_cpu.json, scripts/bench_ops.py.)

    In training (grad enabled), time is cut into blocks of `checkpoint_block` tokens (default
    harness.ops.chunking.CHECKPOINT_BLOCK; 0 = off) that are recomputed in backward, so only the
    inputs and block-boundary states are kept (see harness.ops.chunking.blockwise)."""
    return run_chunked(lambda x, g, h: _chunk_hgrn(x, g, h, chunk_size), (x, g), initial_state, checkpoint_block,
                       chunk_size)


def _chunk_hgrn(
    x: torch.Tensor, g: torch.Tensor, initial_state: torch.Tensor | None, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, D = x.shape
    dtype = x.dtype
    acc = acc_dtype(dtype)  # fp32 for half inputs, else as given
    C = min(chunk_size, T)
    pad = (-T) % C
    x, g = to_acc(x, acc), to_acc(g, acc)
    if pad:  # zero input and zero log-gate leave the state untouched
        x = F.pad(x, (0, 0, 0, pad))
        g = F.pad(g, (0, 0, 0, pad))
    N = x.shape[1] // C
    h_in, a = x.view(B, N, C, D), g.view(B, N, C, D).exp()
    # after the step with offset k, h_in[t] = state at t from zero at t - 2k + 1 and a[t] = the
    # product of the gates over those tokens (out of place: autograd keeps each step's inputs)
    k = 1
    while k < C:
        h_in = torch.cat([h_in[:, :, :k], h_in[:, :, k:] + a[:, :, k:] * h_in[:, :, :-k]], 2)
        a = torch.cat([a[:, :, :k], a[:, :, k:] * a[:, :, :-k]], 2)
        k *= 2
    # h_in: in-chunk state from zero; a: in-chunk cumulative gate product   [B, N, C, D]
    h = x.new_zeros(B, D) if initial_state is None else to_acc(initial_state, acc)
    starts = []  # the state entering each chunk (unbind: no per-chunk indexing under autograd)
    for last_n, a_last_n in zip(h_in[:, :, -1].unbind(1), a[:, :, -1].unbind(1)):
        starts.append(h)
        h = last_n + a_last_n * h
    o = h_in + a * torch.stack(starts, 1).unsqueeze(2)  # [B, N, C, D]
    o = o.reshape(B, N * C, D)[:, :T]
    return o.to(dtype), h
