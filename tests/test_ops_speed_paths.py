"""The fast paths of the chunked ops are exact: the binary-factored pairwise scores
(harness.ops.chunking.strict_scores) equal the pairwise definition, forward and gradients, and
running an op block by block without a tape equals one call. Correctness only: the speed is
recorded by scripts/bench_ops.py, not tested."""
import pytest
import torch
import torch.nn.functional as F

from harness.ops import chunk_dplr, chunk_gla, chunk_kda
from harness.ops.chunking import strict_scores

D = torch.float64


def _pairwise(x, y, Gx, Gy):
    """A[..., i, j, t, s] = sum_k x_tik y_sjk exp(Gx_tik - Gy_sk), s < t, straight from the
    definition ([C, C, K] decays; x, Gx [..., C, X, K], y [..., C, Y, K], Gy [..., C, 1, K])."""
    Gx = Gx.expand_as(x)
    xs, ys, Gxs, Gys = (t.movedim(-2, -3) for t in (x, y, Gx, Gy))  # [..., X | Y | 1, C, K]
    C = x.shape[-3]
    below = torch.ones(C, C, dtype=torch.bool).tril(-1)[..., None]  # s < t (no clamp: its gradient
    # would vanish where an exclusive Gx_t rounds a hair above Gy_{t-1})
    diff = Gxs[..., :, None, :, None, :] - Gys[..., None, :, None, :, :]  # [..., X, 1, C, C, K]
    decay = torch.where(below, diff, float("-inf")).exp()
    return (xs[..., :, None, :, None, :] * ys[..., None, :, None, :, :] * decay).sum(-1)  # [..., X, Y, C, C]


def _operands(C, X, Y, strength, exclusive):
    g = F.logsigmoid(torch.randn(2, 3, C, 5, dtype=D) * strength - strength)  # [lead, C, K]
    G = g.cumsum(-2)
    Gx = torch.stack([G - g if exclusive and i == 0 else G for i in range(X)], -2)  # [2, 3, C, X, 5]
    return torch.randn(2, 3, C, X, 5, dtype=D), torch.randn(2, 3, C, Y, 5, dtype=D), Gx, G.unsqueeze(-2)


@pytest.mark.parametrize("C", [1, 2, 16, 37, 64])
@pytest.mark.parametrize("X, Y, exclusive", [(1, 1, False), (2, 1, False), (2, 2, True)])
@pytest.mark.parametrize("strength", [1.0, 8.0])
def test_strict_scores_equal_the_pairwise_definition(C, X, Y, exclusive, strength):
    x, y, Gx, Gy = _operands(C, X, Y, strength, exclusive)
    torch.testing.assert_close(strict_scores(x, y, Gx, Gy), _pairwise(x, y, Gx, Gy), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("C", [8, 6])
def test_strict_scores_gradients(C):
    """The hand-written backward, with stacked operands, an exclusive Gx and a Gx shared by the
    stacked x (broadcast over X)."""
    x, y, Gx, Gy = (t.requires_grad_() for t in _operands(C, 2, 2, 1.0, True))
    assert torch.autograd.gradcheck(strict_scores, (x, y, Gx, Gy))
    G = Gy.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(strict_scores, (x, y[..., :1, :], G, G))


def test_strict_scores_gradients_match_autograd_of_the_definition():
    x, y, Gx, Gy = (t.requires_grad_() for t in _operands(64, 2, 2, 4.0, True))
    w = torch.randn(2, 3, 2, 2, 64, 64, dtype=D)
    got = torch.autograd.grad((strict_scores(x, y, Gx, Gy) * w).sum(), (x, y, Gx, Gy))
    want = torch.autograd.grad((_pairwise(x, y, Gx, Gy) * w).sum(), (x, y, Gx, Gy))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_strict_scores_do_not_overflow_in_float32():
    """-30 per step: exp(-cumsum) would overflow; every factor here is exp of a non-positive number."""
    x, y = torch.randn(1, 64, 1, 8), torch.randn(1, 64, 1, 8)
    G = torch.full((1, 64, 1, 8), -30.0).cumsum(1)
    A = strict_scores(x, y, G, G)
    assert torch.isfinite(A).all()
    torch.testing.assert_close(A, _pairwise(x, y, G, G), atol=1e-6, rtol=1e-5)


def _inputs(op, T):
    q, k, v = (torch.randn(1, T, 2, 8, dtype=D) for _ in range(3))
    g = F.logsigmoid(torch.randn(1, T, 2, 8, dtype=D) + 1)
    if op == "gla":
        return chunk_gla, (q, k, v, g)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    if op == "kda":
        return chunk_kda, (q, k, v, torch.rand(1, T, 2, dtype=D), g)
    kk = F.normalize(torch.randn(1, T, 2, 8, dtype=D), dim=-1)
    return chunk_dplr, (q, k, v, -kk, kk * torch.rand(1, T, 2, 8, dtype=D), g)


@pytest.mark.parametrize("op", ["gla", "kda", "dplr"])
@pytest.mark.parametrize("grad_enabled", [False, True])
def test_blocks_without_a_tape_equal_one_call(op, grad_enabled):
    """Past one block and with nothing to differentiate (no_grad, or no input that requires grad),
    an op runs block by block: the same chunks, so the same outputs and final state."""
    fn, args = _inputs(op, 150)
    S0 = torch.randn(1, 2, 8, 8, dtype=D)
    with torch.set_grad_enabled(grad_enabled):
        o1, s1 = fn(*args, initial_state=S0, chunk_size=16, checkpoint_block=32)
        o2, s2 = fn(*args, initial_state=S0, chunk_size=16, checkpoint_block=0)
    torch.testing.assert_close(o1, o2, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(s1, s2, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("head_dim, chunk", [(1, 16), (8, 16), (16, 16), (24, 32), (32, 32), (64, 64), (128, 64)])
def test_default_chunk_follows_the_head_dim(head_dim, chunk):
    from harness.ops.chunking import default_chunk_size

    assert default_chunk_size(head_dim) == chunk


@pytest.mark.parametrize("K", [8, 16, 32])
def test_default_chunk_equals_the_step_by_step_recurrence(K):
    """The head-dim chunk (16 or 32 here, not fla's 64) is the same recurrence: forward, final state
    and gradients of GLA (scalar and per-channel gate) and the gated delta rule, fp64, a length
    that is no multiple of the chunk."""
    from harness.ops import chunk_delta_rule, recurrent_delta_rule, recurrent_gla

    torch.manual_seed(K)
    B, T, H, V = 2, 53, 2, 12
    q, k = (F.normalize(torch.randn(B, T, H, K, dtype=D), dim=-1).requires_grad_() for _ in range(2))
    v = torch.randn(B, T, H, V, dtype=D, requires_grad=True)
    beta = torch.rand(B, T, H, dtype=D, requires_grad=True)
    g_head = F.logsigmoid(torch.randn(B, T, H, dtype=D) + 2).requires_grad_()
    g_chan = F.logsigmoid(torch.randn(B, T, H, K, dtype=D) + 2).requires_grad_()
    cases = [(chunk_gla, recurrent_gla, (q, k, v, g_head)), (chunk_gla, recurrent_gla, (q, k, v, g_chan)),
             (chunk_delta_rule, recurrent_delta_rule, (q, k, v, beta, g_head))]
    for chunked, stepwise, args in cases:
        o1, s1 = chunked(*args)
        o2, s2 = stepwise(*args)
        torch.testing.assert_close(o1, o2, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(s1, s2, atol=1e-10, rtol=1e-8)
        w = torch.randn_like(o1)
        g1 = torch.autograd.grad((o1 * w).sum() + s1.sum(), args)
        g2 = torch.autograd.grad((o2 * w).sum() + s2.sum(), args)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)
