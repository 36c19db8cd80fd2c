"""Single-token (T = 1) steps of the recurrences: the decode path, lean.

Same signatures and conventions as the step-by-step references (`recurrent_gla`,
`recurrent_delta_rule`, `recurrent_hgrn`) and the same math, but written for one token: no loop,
no stack, no einsum, no cast when the dtype is already the accumulation dtype, and the state
update as one fused multiply-add. Shapes: q, k [B, 1, H, K], v [B, 1, H, V], state [B, H, K, V]
(hgrn: x, g [B, 1, D], state [B, D]). `harness.ops.dispatch.get_op` picks these for the torch
backend when mode is "recurrent" and the call has one token; tests/test_step_ops.py holds them
equal to the references.
"""
from __future__ import annotations

import torch

from harness.ops.prelude import acc_dtype, to_acc


def check_one_token(t: torch.Tensor) -> None:
    """Step ops take one token: the decode path."""
    if t.shape[1] != 1:
        raise ValueError(f"step ops take one token (T = 1), got T = {t.shape[1]}; use the recurrent or chunk op")


def open_step(q: torch.Tensor, v: torch.Tensor, scale: float | None
              ) -> tuple[int, int, int, int, torch.dtype, torch.dtype, float]:
    """The opening of a one-token step batched over B * H: checks T = 1 and returns B, H, K, V,
    the output (value) dtype, the accumulation dtype and the q scale (default K^-0.5)."""
    check_one_token(q)
    B, _, H, K = q.shape
    dtype = v.dtype
    return B, H, K, v.shape[-1], dtype, acc_dtype(dtype), K**-0.5 if scale is None else scale


def gla_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None = None,
             scale: float | None = None, initial_state: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """S = Diag(exp(g)) S + k v^T, o = S^T (scale * q), for one token; g scalar per head
    [B, 1, H], per key channel [B, 1, H, K], or None."""
    check_one_token(q)
    dtype = v.dtype
    acc = acc_dtype(dtype)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    k_col = to_acc(k, acc).permute(0, 2, 3, 1)  # [B, H, K, 1]
    v_row = to_acc(v, acc).transpose(1, 2)  # [B, H, 1, V]
    if initial_state is None:
        S = k_col * v_row
    else:
        S = to_acc(initial_state, acc)
        if g is not None:
            g = to_acc(g, acc)
            a = g.permute(0, 2, 3, 1) if g.dim() == 4 else g.transpose(1, 2).unsqueeze(-1)  # [B, H, K|1, 1]
            S = S * a.exp()
        S = torch.addcmul(S, k_col, v_row)
    o = (to_acc(q, acc).transpose(1, 2) @ S).mul_(scale).transpose(1, 2)  # [B, 1, H, V]
    return to_acc(o, dtype), S


def delta_rule_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                    g: torch.Tensor | None = None, scale: float | None = None,
                    initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """S = exp(g) S, S = S + beta k (v - S^T k)^T, o = S^T (scale * q), for one token (as 3-D
    batched matmuls over B * H: fewer dispatcher calls than 4-D matmul); g scalar per head
    [B, 1, H], per key channel [B, 1, H, K] (KDA), or None."""
    B, H, K, V, dtype, acc, scale = open_step(q, v, scale)
    k_row = to_acc(k, acc).reshape(B * H, 1, K)
    v_row = to_acc(v, acc).reshape(B * H, 1, V)
    b = to_acc(beta, acc).reshape(B * H, 1, 1)
    if initial_state is None:
        S = k_row.transpose(1, 2) * (v_row * b)
    else:
        S = to_acc(initial_state, acc).reshape(B * H, K, V)
        if g is not None:
            S = S * to_acc(g, acc).reshape(B * H, -1, 1).exp()  # [B * H, 1 | K, 1]
        u = (v_row - torch.bmm(k_row, S)) * b
        S = torch.baddbmm(S, k_row.transpose(1, 2), u)
    o = torch.bmm(to_acc(q, acc).reshape(B * H, 1, K), S).mul_(scale)
    return to_acc(o.view(B, 1, H, V), dtype), S.view(B, H, K, V)


def hgrn_step(
    x: torch.Tensor, g: torch.Tensor, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """h = exp(g) * h + x, o = h, for one token; x, g [B, 1, D], state [B, D]."""
    check_one_token(x)
    dtype = x.dtype
    acc = acc_dtype(dtype)
    x_t = to_acc(x[:, 0], acc)
    h = x_t if initial_state is None else torch.addcmul(x_t, to_acc(g[:, 0], acc).exp(), to_acc(initial_state, acc))
    return to_acc(h.unsqueeze(1), dtype), h


__all__ = ["gla_step", "delta_rule_step", "hgrn_step"]
