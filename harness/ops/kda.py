"""Kimi Delta Attention (KDA): the gated delta rule with a per-channel (key-side) decay.

    S'_t = Diag(exp(g_t)) S_{t-1}                               (decay each key row)
    S_t  = S'_t + beta_t k_t (v_t - S'_t^T k_t)^T               (delta-rule write)
    o_t  = S_t^T (scale * q_t)

q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H], g [B, T, H, K] log decay (<= 0); state
[B, H, K, V]; scale defaults to K ** -0.5. Conventions as fla 0.6's `chunk_kda` with
`use_gate_in_kernel=False`, `use_beta_sigmoid_in_kernel=False` and the k-first state
(`state_v_first=False`): callers pass the finished log decay, beta after its sigmoid, and
L2-normalised q and k. With g constant over K it is Gated DeltaNet (harness.ops.delta_rule).

The step-by-step reference and the one-token step are the delta rule's own
(`recurrent_delta_rule`, `delta_rule_step`), which take a per-channel g; `chunk_kda` is the
chunkwise form.
"""
from __future__ import annotations

import functools

import torch

from harness.ops.chunking import run_chunked, split_chunks, strict_scores
from harness.ops.delta_rule import recurrent_delta_rule
from harness.ops.prelude import prepare_qkv, to_acc
from harness.ops.step import delta_rule_step


def _check_gate(g: torch.Tensor, k: torch.Tensor) -> None:
    if g is None or g.shape != k.shape:
        got = None if g is None else tuple(g.shape)
        raise ValueError(f"kda: the decay g must be per key channel, {tuple(k.shape)}; got {got}")


def recurrent_kda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor,
                  scale: float | None = None, initial_state: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step reference; also the decode path (harness.ops.delta_rule.recurrent_delta_rule)."""
    _check_gate(g, k)
    return recurrent_delta_rule(q, k, v, beta, g, scale=scale, initial_state=initial_state)


def kda_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor,
             scale: float | None = None, initial_state: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One token (T = 1): harness.ops.step.delta_rule_step with the per-channel decay."""
    _check_gate(g, k)
    return delta_rule_step(q, k, v, beta, g, scale=scale, initial_state=initial_state)


def chunk_kda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor,
              scale: float | None = None, initial_state: torch.Tensor | None = None, chunk_size: int = 64,
              sub_chunk_size: int = 16, checkpoint_block: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel form: the WY/UT representation of harness.ops.delta_rule with
    per-channel decays handled as fla does (every exponent <= 0).

    Inside a chunk, with G the in-chunk cumulative log decay (inclusive, per channel) and S_0 the
    state at the chunk's start, the pseudo-values u_t = beta_t (v_t - S'_t^T k_t) solve one unit
    lower-triangular system,
        (I + Diag(beta) A_kk) U = Diag(beta) V - Diag(beta) (k * exp(G)) S_0,
    A_kk[t, s] = sum_c k_tc k_sc exp(G_tc - G_sc) for s < t; then
        O   = (q * exp(G)) S_0 + A_qk U                (A_qk likewise with q, for s <= t)
        S_C = exp(G_C) * S_0 + (k * exp(G_C - G))^T U.
    The pairwise scores use harness.ops.chunking.strict_scores (binary factoring: every pair
    through one reference step, no [C, C, K] tensor); `sub_chunk_size` is accepted for
    compatibility (fla's secondary chunking) and unused. In training, blocks of
    `checkpoint_block` tokens are recomputed in backward (harness.ops.chunking.blockwise)."""
    _check_gate(g, k)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    fn = functools.partial(_chunk_kda, scale=scale, chunk_size=chunk_size, sub_chunk_size=sub_chunk_size)
    return run_chunked(lambda q, k, v, b, g, s: fn(q, k, v, b, g, initial_state=s), (q, k, v, beta, g),
                       initial_state, checkpoint_block, chunk_size)


def _chunk_kda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor,
               scale: float, initial_state: torch.Tensor | None, chunk_size: int, sub_chunk_size: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    q, k, v, S, dtype, acc = prepare_qkv(q, k, v, scale, initial_state)
    beta, g = to_acc(beta, acc), to_acc(g, acc)
    q, k, v, beta, g = split_chunks(C, q, k, v, beta, g)  # [B, H, N, C, ...]
    N = q.shape[2]
    G = g.cumsum(3)  # [B, H, N, C, K], inclusive
    # A_kk (the solve) and A_qk (the output) in one factoring: they share k's decay factors
    G1 = G.unsqueeze(4)  # [B, H, N, C, 1, K]
    A = strict_scores(torch.stack((k, q), 4), k.unsqueeze(4), G1, G1)  # [B, H, N, 2 (k, q), 1 (k), C, C]
    A[:, :, :, 1, 0].diagonal(dim1=-2, dim2=-1).add_((q * k).sum(-1))  # q rows, s = t: exp(0) = 1 (in place)
    # one unbind, not two selects: each select's backward would zero-fill a full-size gradient of A
    A_kk, A_qk = A.flatten(3, 4).unbind(3)  # [B, H, N, C, C] each (k rows s < t, q rows s <= t)
    beta = beta[..., None]  # [B, H, N, C, 1]
    decay = G.exp()  # [B, H, N, C, K]: from the chunk's start through step t
    # (I + Diag(beta) A_kk) [U | W] = Diag(beta) [V | k exp(G)]: one solve for both right-hand sides,
    # u = U - W S_0. unitriangular: the solve reads only the strict lower part (the I is implied)
    UW = torch.linalg.solve_triangular(A_kk * beta, torch.cat((v, k * decay), -1) * beta, upper=False,
                                       unitriangular=True)
    U, W = UW.split((V, K), -1)  # [B, H, N, C, V], [B, H, N, C, K]
    G_last = G[:, :, :, -1:]  # [B, H, N, 1, K]
    k_out = (k * (G_last - G).exp()).transpose(-1, -2)  # [B, H, N, K, C]
    state_decay = G_last.exp().transpose(-1, -2)  # [B, H, N, K, 1]
    starts, us = [], []
    # the only sequential part: chunk-start states and pseudo-values; the outputs are batched after.
    # unbind once: per-chunk indexing under autograd would build a full-size gradient per chunk
    for U_n, W_n, k_n, decay_n in zip(*(t.unbind(2) for t in (U, W, k_out, state_decay))):
        starts.append(S)
        us.append(U_n - W_n @ S)
        S = S * decay_n + k_n @ us[-1]
    o = (q * decay) @ torch.stack(starts, 2) + A_qk @ torch.stack(us, 2)  # [B, H, N, C, V]
    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(dtype), S
