"""The generalised delta rule (diagonal plus low rank, DPLR; RWKV-7's time mixing):

    S_t = Diag(exp(g_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T,     o_t = S_t^T (scale * q_t)

i.e. S_t = (Diag(w_t) + b_t a_t^T) S_{t-1} + k_t v_t^T with the state [K, V] (the transpose of the
paper's S_{t-1}(diag(w_t) + a_t b_t^T) + v_t k_t^T). With a = -k, b = beta k and no decay it is
the delta rule; RWKV-7 takes a = -kk, b = kk * a_rate for a normalised key kk.

q, k, a, b [B, T, H, K], v [B, T, H, V], g [B, T, H, K] log decay (<= 0) or None; state
[B, H, K, V]; scale defaults to K ** -0.5 (RWKV-7 passes 1). Conventions as fla 0.6's
`generalized_delta_rule.dplr` (chunk_dplr_delta_rule(q, k, v, a, b, gk)).
"""
from __future__ import annotations

import functools

import torch

from harness.ops.chunking import run_chunked, split_chunks, strict_scores
from harness.ops.prelude import prepare_qkv, to_acc
from harness.ops.step import open_step


def _gate(g: torch.Tensor | None, like: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    if g is None:
        return like.new_zeros(like.shape, dtype=acc)
    if g.shape != like.shape:
        raise ValueError(f"dplr: the decay g must be per key channel, {tuple(like.shape)}; got {tuple(g.shape)}")
    return to_acc(g, acc)


def recurrent_dplr(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                   g: torch.Tensor | None = None, scale: float | None = None,
                   initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step reference; also the decode path."""
    q, k, v, S, dtype, acc = prepare_qkv(q, k, v, scale, initial_state)
    a, b, g = to_acc(a, acc), to_acc(b, acc), _gate(g, k, acc)
    outs = []
    # unbind once: per-step indexing would make autograd build a full-size gradient per step
    for q_t, k_t, v_t, a_t, b_t, w_t in zip(*(t.unbind(1) for t in (q, k, v, a, b, g.exp()))):
        aS = torch.einsum("bhk,bhkv->bhv", a_t, S)  # a_t^T S_{t-1}
        S = S * w_t[..., None] + b_t[..., None] * aS[..., None, :] + k_t[..., None] * v_t[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(outs, 1).to(dtype), S


def dplr_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
              g: torch.Tensor | None = None, scale: float | None = None,
              initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token (T = 1) of the recurrence as batched matmuls over B * H: the decode path."""
    B, H, K, V, dtype, acc, scale = open_step(q, v, scale)
    col = lambda t: to_acc(t, acc).reshape(B * H, K, 1)  # noqa: E731
    k_c, a_c, b_c = col(k), col(a), col(b)
    v_r = to_acc(v, acc).reshape(B * H, 1, V)
    S = torch.bmm(k_c, v_r)
    if initial_state is not None:
        S0 = to_acc(initial_state, acc).reshape(B * H, K, V)
        decayed = S0 if g is None else S0 * to_acc(g, acc).reshape(B * H, K, 1).exp()
        S = S + decayed + torch.bmm(b_c, torch.bmm(a_c.transpose(1, 2), S0))
    o = torch.bmm(to_acc(q, acc).reshape(B * H, 1, K), S).mul_(scale)
    return to_acc(o.view(B, 1, H, V), dtype), S.view(B, H, K, V)


def chunk_dplr(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               g: torch.Tensor | None = None, scale: float | None = None,
               initial_state: torch.Tensor | None = None, chunk_size: int = 64, sub_chunk_size: int = 8,
               checkpoint_block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel form, exact and overflow-free (every exponent <= 0).

    Inside a chunk, with G the in-chunk cumulative log decay (G^- its exclusive form, G_{t-1})
    and S_0 the state at the chunk's start, the rows u_t^T = a_t^T S_{t-1} solve one unit
    lower-triangular system,
        U = (I - A_ab)^{-1} (A_ak V + (a * exp(G^-)) S_0),
    A_ab[t, s] = sum_k a_tk b_sk exp(G^-_tk - G_sk) and A_ak likewise with k, for s < t; then
        O = (q * exp(G)) S_0 + A_qb U + A_qk V          (A_q.[t, s], s <= t, with G_t - G_s)
        S_C = exp(G_C) * S_0 + (b * exp(G_C - G))^T U + (k * exp(G_C - G))^T V.
    The pairwise terms use harness.ops.chunking.strict_scores (binary factoring, every exponent
    <= 0, no [C, C, K] tensor); `sub_chunk_size` is accepted for compatibility (fla's secondary
    chunking) and unused. In training, blocks of `checkpoint_block` tokens are recomputed in
    backward (harness.ops.chunking.blockwise)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    fn = functools.partial(_chunk_dplr, scale=scale, chunk_size=chunk_size, sub_chunk_size=sub_chunk_size)
    return run_chunked(lambda q, k, v, a, b, g, s: fn(q, k, v, a, b, g, initial_state=s), (q, k, v, a, b, g),
                       initial_state, checkpoint_block, chunk_size)


def _chunk_dplr(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                g: torch.Tensor | None, scale: float, initial_state: torch.Tensor | None, chunk_size: int,
                sub_chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    q, k, v, S, dtype, acc = prepare_qkv(q, k, v, scale, initial_state)
    a, b, g = to_acc(a, acc), to_acc(b, acc), _gate(g, k, acc)
    q, k, v, a, b, g = split_chunks(C, q, k, v, a, b, g)  # [B, H, N, C, ...]
    N = q.shape[2]
    G = g.cumsum(3)  # inclusive
    G_ex = G - g  # exclusive: the decay up to step t - 1
    # the four score matrices in one factoring: rows a (G^-) and q (G) against columns b and k (G)
    A = strict_scores(torch.stack((a, q), 4), torch.stack((b, k), 4), torch.stack((G_ex, G), 4), G.unsqueeze(4))
    # s = t for the q rows: exp(G_t - G_t) = 1, added in place on the diagonals
    A[:, :, :, 1].diagonal(dim1=-2, dim2=-1).add_(torch.stack(((q * b).sum(-1), (q * k).sum(-1)), 3))
    A_ab, A_ak, A_qb, A_qk = A.flatten(3, 4).unbind(3)  # [B, H, N, C, C] each (a rows s < t, q rows s <= t)
    # (I - A_ab) [U0 | W] = [A_ak V | a exp(G^-)], U = U0 + W S_0: one solve for both right-hand
    # sides. unitriangular: the solve reads only the strict lower part (the I is implied)
    rhs = torch.cat((A_ak @ v, a * G_ex.exp()), -1)  # [B, H, N, C, V + K]
    U0, W = torch.linalg.solve_triangular(-A_ab, rhs, upper=False, unitriangular=True).split((V, K), -1)
    G_last = G[:, :, :, -1:]  # [B, H, N, 1, K]
    to_end = (G_last - G).exp()  # [B, H, N, C, K]: from after step t to the chunk's end
    b_out = (b * to_end).transpose(-1, -2)  # [B, H, N, K, C]
    kv = (k * to_end).transpose(-1, -2) @ v  # [B, H, N, K, V]
    state_decay = G_last.exp().transpose(-1, -2)  # [B, H, N, K, 1]
    starts, us = [], []
    # the only sequential part: chunk-start states and the rows U; the outputs are batched after.
    # unbind once: per-chunk indexing under autograd would build a full-size gradient per chunk
    for U0_n, W_n, b_n, kv_n, decay_n in zip(*(t.unbind(2) for t in (U0, W, b_out, kv, state_decay))):
        starts.append(S)
        us.append(U0_n + W_n @ S)
        S = S * decay_n + b_n @ us[-1] + kv_n
    o = (q * G.exp()) @ torch.stack(starts, 2) + A_qb @ torch.stack(us, 2) + A_qk @ v  # [B, H, N, C, V]
    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(dtype), S
