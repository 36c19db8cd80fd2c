"""The delta rule with an optional scalar decay (DeltaNet; Gated DeltaNet when g is given).

S_t = exp(g_t) S_{t-1} (I - beta_t k_t k_t^T)  written k-first as in fla:
S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - exp(g_t) S_{t-1}^T k_t)^T,   o_t = S_t^T (scale * q_t).

q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] in (0, 1) (or (0, 2) with negative
eigenvalues), g [B, T, H] log decay or None; state [B, H, K, V]; scale defaults to K ** -0.5.
The step-by-step reference also takes a per-key-channel g [B, T, H, K] (Kimi Delta Attention,
whose chunked form is harness.ops.kda).
Callers L2-normalise q and k (fla's use_qk_l2norm_in_kernel) before calling.
"""
from __future__ import annotations

import functools

import torch

from harness.ops.chunking import default_chunk_size, pair_decay, run_chunked, split_chunks
from harness.ops.prelude import prepare_qkv


def recurrent_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                         g: torch.Tensor | None = None, scale: float | None = None,
                         initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step reference; also the decode path."""
    q, k, v, S, dtype, acc = prepare_qkv(q, k, v, scale, initial_state)
    beta = beta.to(acc)
    outs = []
    decays = g.to(acc).exp() if g is not None else q.new_ones(q.shape[:3])
    decays = (decays[..., None, None] if decays.dim() == 3 else decays[..., None]).unbind(1)
    # unbind once: per-step indexing would make autograd build a full-size gradient per step
    for q_t, k_t, v_t, b_t, a_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), beta.unbind(1), decays):
        S = S * a_t
        v_old = torch.einsum("bhk,bhkv->bhv", k_t, S)
        u = b_t[..., None] * (v_t - v_old)
        S = S + k_t[..., None] * u[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(outs, 1).to(dtype), S


def chunk_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                     g: torch.Tensor | None = None, scale: float | None = None,
                     initial_state: torch.Tensor | None = None, chunk_size: int | None = None,
                     checkpoint_block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel form with the WY/UT representation (Yang et al. 2024, "Parallelizing
    linear transformers with the delta rule"; gated form from Gated DeltaNet).

    Per chunk, T = (I + StrictTril(diag(beta) K K^T * Gamma))^{-1} (one triangular solve), then
    U = T diag(beta) V and W = T diag(beta) Diag(exp(G)) K give the pseudo-values
    v_new = U - W S so that the chunk is plain (decayed) linear attention against v_new.

    In training (grad enabled), time is cut into blocks of `checkpoint_block` tokens (default
    harness.ops.chunking.CHECKPOINT_BLOCK; 0 = off) that are recomputed in backward, so only the
    inputs and block-boundary states are kept (see harness.ops.chunking.blockwise).
    `chunk_size` None: by the head dim (harness.ops.chunking.default_chunk_size).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if chunk_size is None:
        chunk_size = default_chunk_size(q.shape[-1])
    fn = functools.partial(_chunk_delta_rule, scale=scale, chunk_size=chunk_size)
    return run_chunked(lambda q, k, v, b, g, s: fn(q, k, v, b, g, initial_state=s), (q, k, v, beta, g),
                       initial_state, checkpoint_block, chunk_size)


def _chunk_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                      g: torch.Tensor | None, scale: float, initial_state: torch.Tensor | None,
                      chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    q, k, v, S, dtype, acc = prepare_qkv(q, k, v, scale, initial_state)
    beta = beta.to(acc)
    g = q.new_zeros(B, T, H) if g is None else g.to(acc)
    q, k, v, beta, g = split_chunks(C, q, k, v, beta, g)
    N = q.shape[2]
    G = g.cumsum(-1)  # [B, H, N, C]
    decay = pair_decay(G)  # Gamma for s <= t (1 above the diagonal: masked below)
    k_beta = k * beta[..., None]
    eye = torch.eye(C, device=q.device, dtype=q.dtype)
    A = ((k_beta @ k.transpose(-1, -2)) * decay).tril(-1)
    T_inv = torch.linalg.solve_triangular(eye + A, eye.expand_as(A), upper=False, unitriangular=True)
    U = T_inv @ (v * beta[..., None])
    W = T_inv @ (k_beta * G.exp()[..., None])
    attn = ((q @ k.transpose(-1, -2)) * decay).tril_()
    q_in = q * G.exp()[..., None]
    k_out = k * (G[..., -1:] - G).exp()[..., None]
    state_decay = G[..., -1].exp()[..., None, None]  # [B, H, N, 1, 1]
    outs = []
    # unbind once: indexing [:, :, n] inside the loop would make autograd build a full-size
    # zero gradient per chunk (quadratic in the number of chunks)
    per_chunk = zip(*(t.unbind(2) for t in (U, W, q_in, attn, state_decay, k_out.transpose(-1, -2))))
    for U_n, W_n, q_n, attn_n, decay_n, k_n in per_chunk:
        v_new = U_n - W_n @ S
        outs.append(q_n @ S + attn_n @ v_new)
        S = S * decay_n + k_n @ v_new
    o = torch.stack(outs, 2).reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(dtype), S
