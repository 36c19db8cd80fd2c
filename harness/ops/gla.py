"""Linear attention with decay: S_t = Diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T (scale * q_t).

One op serves RetNet (fixed scalar decay per head), GLA and HGRN-2 (data-dependent per-channel
decay on the key side) and plain linear attention (no decay). Conventions follow fla 0.6:
q, k [B, T, H, K], v [B, T, H, V], log-space gate g either [B, T, H] (scalar per head) or
[B, T, H, K] (per key channel) or None; state S is [B, H, K, V]; scale defaults to K ** -0.5.
"""
from __future__ import annotations

import functools

import torch

from harness.ops.chunking import default_chunk_size, pair_decay, run_chunked, split_chunks, strict_scores
from harness.ops.prelude import prepare_qkv


def _expand_gate(g: torch.Tensor | None, q: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    if g is None:
        return q.new_zeros(q.shape[:3], dtype=acc)
    if g.dim() not in (3, 4) or g.shape[:3] != q.shape[:3]:
        raise ValueError(f"gate shape {tuple(g.shape)} does not match q {tuple(q.shape)}")
    return g.to(acc)


def recurrent_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None = None,
                  scale: float | None = None, initial_state: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step reference; also the decode path."""
    q, k, v, S, dtype, acc = prepare_qkv(q, k, v, scale, initial_state)
    g = _expand_gate(g, q, acc)
    outs = []
    decays = g.exp()
    decays = decays[..., None, None] if decays.dim() == 3 else decays[..., None]
    # unbind once: per-step indexing would make autograd build a full-size gradient per step
    for q_t, k_t, v_t, a_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), decays.unbind(1)):
        S = S * a_t + k_t[..., None] * v_t[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(outs, 1).to(dtype), S


def chunk_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None = None,
              scale: float | None = None, initial_state: torch.Tensor | None = None,
              chunk_size: int | None = None, sub_chunk_size: int = 8, checkpoint_block: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel form (GLA paper, Yang et al. 2024), exact and overflow-free.

    Every decay factor is exp of a non-positive number: inter-chunk terms use the chunk boundary
    as reference; intra-chunk terms use exact pairwise decays exp(G_t - G_s), s <= t, as a
    [C, C] matrix for a scalar gate. For a per-channel gate, every pair factors through one
    reference step between them (harness.ops.chunking.strict_scores, binary factoring: no
    [C, C, K] tensor); `sub_chunk_size` is accepted for compatibility (fla's secondary chunking)
    and unused.

    In training (grad enabled), time is cut into blocks of `checkpoint_block` tokens (default
    harness.ops.chunking.CHECKPOINT_BLOCK; 0 = off) that are recomputed in backward, so only the
    inputs and block-boundary states are kept (see harness.ops.chunking.blockwise).
    `chunk_size` None: by the head dim (harness.ops.chunking.default_chunk_size).
    """
    if g is not None:
        _expand_gate(g, q, g.dtype)  # check the shape before blocks slice it
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if chunk_size is None:
        chunk_size = default_chunk_size(q.shape[-1])
    fn = functools.partial(_chunk_gla, scale=scale, chunk_size=chunk_size, sub_chunk_size=sub_chunk_size)
    return run_chunked(lambda q, k, v, g, s: fn(q, k, v, g, initial_state=s), (q, k, v, g), initial_state,
                       checkpoint_block, chunk_size)


def _chunk_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None, scale: float,
               initial_state: torch.Tensor | None, chunk_size: int, sub_chunk_size: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    q, k, v, S, dtype, acc = prepare_qkv(q, k, v, scale, initial_state)
    g = _expand_gate(g, q, acc)
    per_channel = g.dim() == 4
    C = chunk_size
    q, k, v, g = split_chunks(C, q, k, v, g)
    N = q.shape[2]
    G = g.cumsum(3)  # in-chunk cumulative log decay
    if per_channel:
        G1 = G.unsqueeze(4)  # [B, H, N, C, 1, K]
        # flatten the two unit dims (a view) rather than select them: a select's backward zero-fills
        A = strict_scores(q.unsqueeze(4), k.unsqueeze(4), G1, G1).flatten(2, 4)  # [B, H, N, C, C], s < t
        A.diagonal(dim1=-2, dim2=-1).add_((q * k).sum(-1))  # s = t: exp(G_t - G_t) = 1 (in place)
        G_last = G[:, :, :, -1]  # [B, H, N, K]
        q_in = q * G.exp()
        k_out = k * (G_last.unsqueeze(3) - G).exp()
        state_decay = G_last.exp()[..., None]  # [B, H, N, K, 1]
    else:
        A = ((q @ k.transpose(-1, -2)) * pair_decay(G)).tril_()  # [B, H, N, C, C], s <= t
        G_last = G[:, :, :, -1:]  # [B, H, N, 1]
        q_in = q * G.exp()[..., None]
        k_out = k * (G_last - G).exp()[..., None]
        state_decay = G_last.exp()[..., None]  # [B, H, N, 1, 1]
    # the only sequential part: chunk-start states, S_{n+1} = decay_n * S_n + K_n^T V_n
    delta = k_out.transpose(-1, -2) @ v  # [B, H, N, K, V]
    starts = []
    for decay_n, delta_n in zip(state_decay.unbind(2), delta.unbind(2)):  # unbind: see chunk_delta_rule
        starts.append(S)
        S = S * decay_n + delta_n
    o = A @ v + q_in @ torch.stack(starts, 2)
    o = o.reshape(B, H, N * C, V)[:, :, :T].transpose(1, 2)
    return o.to(dtype), S
