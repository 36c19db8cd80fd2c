"""Shared plumbing of the chunkwise forms: pad time to whole chunks and split into chunks, the
memory-lean training schedule (checkpointing over time blocks), and the intra-chunk pairwise
scores under per-channel decays (`strict_scores`)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

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
        # contiguous [B, H, T, ...] (one copy): batched matmuls on the strided chunk views of
        # [B, T, H, ...] would copy their operands, forward and backward, on every use
        out.append(t.transpose(1, 2).contiguous().view(B, H, T // C, C, *t.shape[3:]))
    return out


def default_chunk_size(head_dim: int) -> int:
    """The chunk length of the GLA and delta-rule ops when the caller gives none: the key head dim
    rounded up to a power of two, within [16, 64]. Per chunk the work is O(C^2 K) for the scores
    plus, for the delta rule, an O(C^3) triangular inverse, so a chunk much longer than the head
    dim pays for its [C, C] terms. Measured forward + backward per layer on this CPU (one thread,
    B 32 x 128 tokens, the recall suites' shapes): delta rule at head dim 16 43.8 -> 25.3 ms
    (chunk 64 -> 16), at 32 28.7 -> 23.7 ms (64 -> 32), equal at 64; per-channel GLA at head dim
    16 21.1 -> 17.3 ms; at head dim 64 and 2K tokens chunk 64 stays the fastest (fla's default)."""
    return min(64, max(16, 1 << (max(int(head_dim), 1) - 1).bit_length()))


def pair_decay(G: torch.Tensor) -> torch.Tensor:
    """exp(G_t - G_s) [..., C(t), C(s)] of an in-chunk cumulative log decay G [..., C] (non-increasing
    in t) for s <= t, and 1 above the diagonal (callers mask with tril): the exponent is zeroed
    there (tril_, in place) instead of set to -inf, so no overflow, and exp and the mask stay cheap
    passes (torch.where with -inf, and exp(-inf), each cost several times an exp on CPU)."""
    return (G.unsqueeze(-1) - G.unsqueeze(-2)).tril_().exp()


# ---- memory-lean training: recompute over time blocks -------------------------------------------
#
# Under autograd the chunked forms keep every intra-chunk intermediate ([C, C] scores, decays,
# triangular solves, decay factors) for backward: many times the inputs at long T.
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
chunk); `checkpoint_block=None` on an op reads this at call time, 0 turns the lean path (and the
block-by-block forward without a tape) off."""


def resolve_block(block: int | None, chunk_size: int) -> int:
    block = CHECKPOINT_BLOCK if block is None else int(block)
    if block <= 0:
        return 0
    return max(chunk_size, block - block % chunk_size)


def wants_blocks(block: int, seq_len: int, *tensors: torch.Tensor | None) -> bool:
    """Recompute only when it saves something: training (grad enabled, some input needs grad)
    and more than two blocks of time. At two blocks or fewer one taped call is kept: recomputing
    costs a whole extra forward there (KDA 141 -> 115 ms, dplr 189 -> 162 ms fwd + bwd at 2K, B 1,
    H 4, head dim 64: reports/benchmarks/ops_cpu.json), for at most one block's tape more of memory;
    the memory the lean path exists for is that of long sequences."""
    return (
        block > 0
        and seq_len > 2 * block
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
    seq: Sequence[torch.Tensor | None],
    initial_state: torch.Tensor | None,
    block: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `fn(*seq_block, state) -> (o_block, state)` over time blocks of `block` steps of the
    [B, T, ...] tensors in `seq` (None entries pass through) as one `_Blockwise` (no intra-block
    tape; recomputed block by block in backward); returns the outputs concatenated over time and
    the final state."""
    return _Blockwise.apply(fn, block, len(seq), *seq, initial_state)


def run_chunked(
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    seq: Sequence[torch.Tensor | None],
    initial_state: torch.Tensor | None,
    checkpoint_block: int | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`fn(*seq, state) -> (o, state)` over the whole [B, T, ...] sequence at once, or, past one
    block of `checkpoint_block` steps (resolve_block), block by block: in training blockwise (the
    memory-lean path every chunked op shares), without a tape (inference, or no input needing
    grad) as plain consecutive calls, so the intra-chunk working set stays one block's (faster
    than one call over long sequences on CPU, and far less memory: reports/benchmarks/ops_cpu.json)."""
    block, T = resolve_block(checkpoint_block, chunk_size), seq[0].shape[1]
    if wants_blocks(block, T, *seq, initial_state):
        return blockwise(fn, seq, initial_state, block)
    taped = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (*seq, initial_state))
    if block <= 0 or T <= block or taped:
        return fn(*seq, initial_state)
    outs, state = [], initial_state
    for lo in range(0, T, block):  # whole chunks per block: the same chunks as one call
        o, state = fn(*(None if t is None else t[:, lo:lo + block] for t in seq), state)
        outs.append(o)
    return torch.cat(outs, 1), state


# ---- pairwise scores with per-channel decays, by binary factoring ---------------------------------
#
# A[t, s] = sum_k x_tk y_sk exp(Gx_tk - Gy_sk) needs, done pairwise, a [C, C, K] tensor of decays
# per chunk (many elementwise passes over it, forward and backward: it dominated the per-channel
# ops' profiles). Every pair s < t of a chunk is instead an off-diagonal pair of exactly one binary
# level: the block of 2b steps holding both, s in its lower half and t in its upper half. Both
# factor through the decay at the end of the lower half, G_ref = Gy at step (block start + b - 1):
#     exp(Gx_t - Gy_s) = exp(Gx_t - G_ref) * exp(G_ref - Gy_s),
# each exponent <= 0 (t > ref >= s, Gx non-increasing and at most Gy at the same step), so it stays
# exact and overflow-free like fla's secondary chunking, with one [b, K] x [K, b] matmul per block
# and O(C K) elementwise work per level (log2 C levels) instead of O(C c K). Level by level, not
# all levels gathered at once: measured slower, its [L C/2, K] temporaries leave the cache.


def _level_blocks(A: torch.Tensor, b: int) -> torch.Tensor:
    """The level-b blocks of A [..., X, Y, C, C] as a view [..., X, Y, b(t), b(s), C/2b]: rows of
    each block's upper half against columns of its lower half."""
    C = A.shape[-1]
    n = C // (2 * b)
    A = A.unflatten(-1, (n, 2, b)).unflatten(-4, (n, 2, b))  # [..., X, Y, n, 2, b, n, 2, b]
    return A.select(-2, 0).select(-4, 1).diagonal(dim1=-4, dim2=-2)  # [..., X, Y, b, b, n]


def _as_level_blocks(prod: torch.Tensor, b: int, X: int, Y: int) -> torch.Tensor:
    """Level-b products [..., n, b X, b Y] (row t x, column s y) as [..., X, Y, b, b, n], a view."""
    L = prod.dim() - 3
    prod = prod.unflatten(-1, (b, Y)).unflatten(-3, (b, X))  # [..., n, b, X, b, Y]
    return prod.permute(*range(L), L + 2, L + 4, L + 1, L + 3, L)


def _levels(C: int, *tensors: torch.Tensor):
    """Per binary level b = 1, 2, 4, ... < C: b and each [..., C, X, K] tensor viewed as
    [..., C/2b, 2, b, X, K] (block, half, step in the half)."""
    b = 1
    while b < C:
        yield b, [t.unflatten(-3, (C // (2 * b), 2, b)) for t in tensors]
        b *= 2


def _scaled_halves(b: int, x, y, Gx, Gy):
    """Level b's upper-half rows of x times exp(Gx_t - G_ref) and lower-half rows of y times
    exp(G_ref - Gy_s) ([..., C/2b, b, X, K] and [..., C/2b, b, Y, K]), and the two factors;
    inputs [..., C/2b, 2, b, X, K] (_levels), G_ref = Gy at the end of each lower half."""
    G_ref = Gy[..., 0, b - 1:b, :, :]  # [..., C/2b, 1, 1, K]
    ex = (Gx[..., 1, :, :, :] - G_ref).exp_()
    if b == 1:  # the lower half is the reference step itself: exp(0)
        return x[..., 1, :, :, :] * ex, y[..., 0, :, :, :], ex, G_ref.new_ones(())
    ey = (G_ref - Gy[..., 0, :, :, :]).exp_()
    return x[..., 1, :, :, :] * ex, y[..., 0, :, :, :] * ey, ex, ey


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b over the last two dims; with an inner dim of 1 or 2 as outer products: CPU batched
    matmul of many [r, 2] x [2, K] blocks is several times slower than these elementwise passes."""
    if a.shape[-1] > 2:
        return a @ b
    out = a[..., :, :1] * b[..., :1, :]
    for j in range(1, a.shape[-1]):
        out.addcmul_(a[..., :, j:j + 1], b[..., j:j + 1, :])
    return out


class _StrictScores(torch.autograd.Function):
    """`strict_scores` with a hand-written backward, level by level like the forward:
        dx_t = sum_s dA_ts y_s exp(Gx_t - Gy_s),   dy_s = sum_t dA_ts x_t exp(Gx_t - Gy_s),
        dGx = x * dx,   dGy = -y * dy   (elementwise over k; summed over the stacked x or y).
    Autograd through the factored forward would build a full-size zero gradient per slice of every
    level and sum them; here each level adds into one buffer per input. Keeps only the inputs
    (the factors are recomputed: O(C K) per level). The stacked operands sit next to the step
    ([..., C, X, K]), so each level's [b X, K] x [K, b Y] products are plain views: no copies."""

    @staticmethod
    def forward(ctx, x, y, Gx, Gy):
        C, X, Y = x.shape[-3], x.shape[-2], y.shape[-2]
        lead = torch.broadcast_shapes(x.shape[:-3], y.shape[:-3])
        A = x.new_zeros(*lead, X, Y, C, C)
        for b, halves in _levels(C, x, y, Gx, Gy):
            x_up, y_lo, _, _ = _scaled_halves(b, *halves)
            prod = x_up.flatten(-3, -2) @ y_lo.flatten(-3, -2).transpose(-1, -2)  # [..., n, b X, b Y]
            _level_blocks(A, b).copy_(_as_level_blocks(prod, b, X, Y))
        ctx.save_for_backward(x, y, Gx, Gy)
        return A  # [..., X, Y, C, C]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dA):
        x, y, Gx, Gy = ctx.saved_tensors
        C, X, Y = x.shape[-3], x.shape[-2], y.shape[-2]
        dx = x.new_zeros(torch.broadcast_shapes(x.shape, Gx.shape))  # [..., C, X, K]
        dy = y.new_zeros(torch.broadcast_shapes(y.shape, Gy.shape))  # [..., C, Y, K]
        for b, (xh, yh, Gxh, Gyh, dxh, dyh) in _levels(C, x, y, Gx, Gy, dx, dy):
            n = C // (2 * b)
            dA_b = torch.empty(*dA.shape[:-4], n, b * X, b * Y, dtype=dA.dtype, device=dA.device)
            _as_level_blocks(dA_b, b, X, Y).copy_(_level_blocks(dA, b))  # [..., n, bX, bY]
            x_up, y_lo, ex, ey = _scaled_halves(b, xh, yh, Gxh, Gyh)  # [..., n, b, X | Y, K]
            dxh[..., 1, :, :, :].addcmul_(_matmul(dA_b, y_lo.flatten(-3, -2)).view_as(x_up), ex)
            dyh[..., 0, :, :, :].addcmul_(_matmul(dA_b.transpose(-1, -2), x_up.flatten(-3, -2)).view_as(y_lo), ey)
        need = ctx.needs_input_grad
        return (_reduce(dx, x) if need[0] else None, _reduce(dy, y) if need[1] else None,
                _reduce(dx * x, Gx) if need[2] else None, _reduce((dy * y).neg_(), Gy) if need[3] else None)


def _reduce(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A gradient in the broadcast shape summed down to an input's shape."""
    return grad if grad.shape == like.shape else grad.sum_to_size(like.shape)


def _pad_pow2(C: int, *pairs: tuple[torch.Tensor, bool]) -> list[torch.Tensor]:
    """[..., C, X, K] tensors padded in time to the next power of two: values (False) with zeros,
    log decays (True) by repeating the last step (no decay, so every exponent stays <= 0)."""
    C2 = 1 << (C - 1).bit_length()
    out = []
    for t, is_decay in pairs:
        tail = t[..., -1:, :, :] if is_decay else torch.zeros_like(t[..., -1:, :, :])
        out.append(torch.cat([t, tail.expand(*t.shape[:-3], C2 - C, *t.shape[-2:])], -3))
    return out


def strict_scores(x: torch.Tensor, y: torch.Tensor, Gx: torch.Tensor, Gy: torch.Tensor) -> torch.Tensor:
    """A[..., i, j, t, s] = sum_k x_tik y_sjk exp(Gx_tik - Gy_sk) for s < t within each chunk, 0 on
    and above the diagonal: x [..., C, X, K] (Gx the same or [..., C, 1, K]) and y [..., C, Y, K]
    stack X and Y score operands next to the step, Gy [..., C, 1, K] is shared by all y; out
    [..., X, Y, C, C]. Gy is an inclusive in-chunk cumulative log decay, Gx inclusive or exclusive
    (Gx_t - Gy_s <= 0 for s < t); the diagonal, where needed, is the caller's (with Gx_t = Gy_t it
    is sum_k x_tk y_tk).

    Binary factoring (see above): the decay factors of each side are computed once for all the
    score matrices of a chunk."""
    C, X, Y = x.shape[-3], x.shape[-2], y.shape[-2]
    if C == 1:  # no pair s < t
        return x.new_zeros(*torch.broadcast_shapes(x.shape[:-3], y.shape[:-3]), X, Y, 1, 1)
    if C & (C - 1):
        x, Gx, y, Gy = _pad_pow2(C, (x, False), (Gx, True), (y, False), (Gy, True))
        return _StrictScores.apply(x, y, Gx, Gy)[..., :C, :C]
    return _StrictScores.apply(x, y, Gx, Gy)
