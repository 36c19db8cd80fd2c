"""Shared plumbing of the chunkwise forms: pad time to whole chunks and split into chunks, and the
memory-lean training schedule (checkpointing over time blocks)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

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


# ---- memory-lean training: recompute over time blocks -------------------------------------------
#
# Under autograd the chunked forms keep every intra-chunk intermediate ([C, C] scores, decays,
# triangular solves; [c, c, K] pairwise decays) for backward: many times the inputs at long T.
# `blockwise` cuts time into blocks of whole chunks and runs each block's chunked forward without
# a tape (`_Block`, an autograd.Function), carrying the state from block to block. Backward keeps
# only the block inputs (views of the op's inputs) and the block-boundary states, and recomputes
# one block's intermediates at a time (activation checkpointing, as fla's kernels recompute the
# intra-chunk terms). The chunks are the same as in one call over all of T (blocks are whole
# chunks), so the forward is the same computation, only scheduled in pieces.
#
# Not torch.utils.checkpoint: its non-reentrant form imports torch._dynamo on first use, which
# alone costs ~150 MiB of resident memory on CPU, more than this saves at 16K tokens.

CHECKPOINT_BLOCK = 1024
"""Default block length in tokens (rounded down to a multiple of the chunk size, at least one
chunk); `checkpoint_block=None` on an op reads this at call time, 0 turns the lean path off."""


def resolve_block(block: Optional[int], chunk_size: int) -> int:
    block = CHECKPOINT_BLOCK if block is None else int(block)
    if block <= 0:
        return 0
    return max(chunk_size, block - block % chunk_size)


def wants_blocks(block: int, seq_len: int, *tensors: Optional[torch.Tensor]) -> bool:
    """Recompute only when it saves something: training (grad enabled, some input needs grad)
    and more than one block of time."""
    return (
        block > 0
        and seq_len > block
        and torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for t in tensors)
    )


class _Blockwise(torch.autograd.Function):
    """(o, state) of `fn` run block by block over time, without a tape in forward; keeps the
    inputs and the block-boundary states, and in backward recomputes and differentiates one
    block at a time, last block first, writing each block's gradients into full-size buffers."""

    @staticmethod
    def forward(ctx, fn, block, n_seq, *args):
        seq, state = args[:n_seq], args[n_seq]
        T = next(t for t in seq if t is not None).shape[1]
        outs, starts = [], []
        for lo in range(0, T, block):
            starts.append(state)
            o, state = fn(*(None if t is None else t[:, lo:lo + block] for t in seq), state)
            outs.append(o)
        ctx.fn, ctx.block, ctx.n_seq, ctx.T = fn, block, n_seq, T
        ctx.save_for_backward(*args)
        ctx.starts = starts[1:]  # intermediate states (made here, no grad): kept on ctx
        return torch.cat(outs, 1), state

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_o, grad_state):
        args = ctx.saved_tensors
        seq, s0 = args[: ctx.n_seq], args[ctx.n_seq]
        needs = ctx.needs_input_grad[3:]
        seq_needs, s0_needs = needs[: ctx.n_seq], needs[ctx.n_seq]
        grads = [torch.empty_like(t) if n else None for t, n in zip(seq, seq_needs)]
        starts = [s0, *ctx.starts]
        block, T = ctx.block, ctx.T
        g_state = grad_state
        for i in reversed(range(len(starts))):
            lo = i * block
            part = [None if t is None else t[:, lo:lo + block].detach().requires_grad_(n)
                    for t, n in zip(seq, seq_needs)]
            s_in = starts[i]
            s_needs = s0_needs if i == 0 else True
            if s_in is not None:
                s_in = s_in.detach().requires_grad_(s_needs)
            with torch.enable_grad():
                o, s_out = ctx.fn(*part, s_in)
            wrt = [t for t, n in zip(part, seq_needs) if n]
            if s_in is not None and s_needs:
                wrt.append(s_in)
            got = list(torch.autograd.grad((o, s_out), wrt, (grad_o[:, lo:lo + min(block, T - lo)], g_state),
                                           allow_unused=True))
            if s_in is not None and s_needs:
                g_state = got.pop()
                if g_state is None:
                    g_state = torch.zeros_like(s_in)
            for buf, g in zip((b for b in grads if b is not None), got):
                if g is None:
                    buf[:, lo:lo + block].zero_()
                else:
                    buf[:, lo:lo + block].copy_(g)
            del o, s_out, part, got
        return (None, None, None, *grads, g_state if s0_needs else None)


def blockwise(
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    seq: Sequence[Optional[torch.Tensor]],
    initial_state: Optional[torch.Tensor],
    block: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `fn(*seq_block, state) -> (o_block, state)` over time blocks of `block` steps of the
    [B, T, ...] tensors in `seq` (None entries pass through) as one `_Blockwise` (no intra-block
    tape; recomputed block by block in backward); returns the outputs concatenated over time and
    the final state."""
    return _Blockwise.apply(fn, block, len(seq), *seq, initial_state)


def run_chunked(
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    seq: Sequence[Optional[torch.Tensor]],
    initial_state: Optional[torch.Tensor],
    checkpoint_block: Optional[int],
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`fn(*seq, state) -> (o, state)` over the whole [B, T, ...] sequence at once, or, in training
    past one block of `checkpoint_block` steps (resolve_block, wants_blocks), blockwise: the
    memory-lean path every chunked op shares."""
    block = resolve_block(checkpoint_block, chunk_size)
    if wants_blocks(block, seq[0].shape[1], *seq, initial_state):
        return blockwise(fn, seq, initial_state, block)
    return fn(*seq, initial_state)


def intra_chunk_scores(x: torch.Tensor, y: torch.Tensor, Gx: torch.Tensor, Gy: torch.Tensor, c: int) -> torch.Tensor:
    """A[t, s] = sum_k x_tk y_sk exp(Gx_tk - Gy_sk) for s <= t within each chunk, per-channel
    decays, stable for any gate values ([B, H, N, C, K] in, [B, H, N, C, C] out; 0 above the
    diagonal). Gx and Gy are in-chunk cumulative log decays (<= 0, non-increasing in time): Gy
    inclusive of step s, Gx inclusive of step t (e.g. q_t against k_s) or exclusive of it (e.g.
    the delta rule's a_t reading the state before step t) — in both, Gx_t - Gy_s <= 0 for s < t,
    which is all the factoring below needs; callers that want s < t only mask the diagonal.

    fla's secondary chunking: pairs inside one sub-chunk of `c` steps use exact pairwise decays
    (a [c, c, K] tensor); pairs in different sub-chunks j < i factor through Gy at the end of
    sub-chunk j, so every exponent stays <= 0."""
    B, H, N, C, K = x.shape
    c = min(c, C)
    if C % c:
        raise ValueError(f"chunk size {C} must be a multiple of the sub-chunk size {c}")
    ns = C // c
    sub = lambda t: t.reshape(B, H, N, ns, c, K)  # noqa: E731
    xs, ys, Gxs, Gys = sub(x), sub(y), sub(Gx), sub(Gy)
    # pairs inside one sub-chunk: exact pairwise decays. For s < t the exponent is <= 0; the
    # clamp only tames the s >= t entries that the mask (or the caller) then drops.
    causal = torch.ones(c, c, dtype=x.dtype, device=x.device).tril()
    pair = (Gxs.unsqueeze(5) - Gys.unsqueeze(4)).clamp(max=0).exp()  # [B, H, N, ns, t, s, K]
    A_diag = ((xs.unsqueeze(5) * pair) * ys.unsqueeze(4)).sum(-1) * causal
    A = torch.einsum("bhnits,ij->bhnitjs", A_diag, torch.eye(ns, dtype=x.dtype, device=x.device))
    if ns > 1:  # pairs across sub-chunks j < i: factor through Gy at the end of sub-chunk j
        G_ref = Gys[:, :, :, :, -1]  # [B, H, N, ns(j), K]
        later = torch.arange(C, device=x.device)[None, :] // c > torch.arange(ns, device=x.device)[:, None]
        x_rel = torch.where(later[:, :, None], Gx.unsqueeze(3) - G_ref.unsqueeze(4), float("-inf"))
        x_j = x.unsqueeze(3) * x_rel.exp()  # [B, H, N, ns(j), C(t), K]
        y_j = ys * (G_ref.unsqueeze(4) - Gys).exp()  # [B, H, N, ns(j), c(s), K]
        A_off = x_j @ y_j.transpose(-1, -2)  # [B, H, N, ns(j), C(t), c(s)]
        A = A + A_off.reshape(B, H, N, ns, ns, c, c).permute(0, 1, 2, 4, 5, 3, 6)
    return A.reshape(B, H, N, C, C)

