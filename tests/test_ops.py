"""Each chunked op equals its step-by-step recurrence, forward and backward, on random inputs
(including strong decays that would overflow a naive chunked form, and ragged lengths)."""
import pytest
import torch
import torch.nn.functional as F

from harness.ops import (
    chunk_delta_rule,
    chunk_dplr,
    chunk_gla,
    chunk_hgrn,
    chunk_kda,
    recurrent_delta_rule,
    recurrent_dplr,
    recurrent_gla,
    recurrent_hgrn,
    recurrent_kda,
    short_conv,
)

B, H, K, V = 2, 3, 8, 12  # each test is seeded (tests/conftest.py)


def _grads(fn, inputs):
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    o, s = fn(*inputs)
    w1 = torch.randn(o.shape, dtype=o.dtype)  # not randn_like: it follows the strides
    w2 = torch.randn(s.shape, dtype=s.dtype)
    ((o * w1).sum() + (s * w2).sum()).backward()
    return o.detach(), s.detach(), [t.grad for t in inputs]


def _compare(chunk_fn, rec_fn, inputs, atol=1e-10):
    torch.manual_seed(1)
    o1, s1, g1 = _grads(chunk_fn, inputs)
    torch.manual_seed(1)
    o2, s2, g2 = _grads(rec_fn, inputs)
    torch.testing.assert_close(o1, o2, atol=atol, rtol=1e-8)
    torch.testing.assert_close(s1, s2, atol=atol, rtol=1e-8)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-8)


def _qkv(T):
    d = torch.float64
    return torch.randn(B, T, H, K, dtype=d), torch.randn(B, T, H, K, dtype=d), torch.randn(B, T, H, V, dtype=d)


@pytest.mark.parametrize("T", [1, 37, 130])
@pytest.mark.parametrize("gate", ["none", "scalar", "channel", "strong"])
def test_chunk_gla_matches_recurrent(T, gate):
    q, k, v = _qkv(T)
    g = {
        "none": None,
        "scalar": F.logsigmoid(torch.randn(B, T, H, dtype=torch.float64)),
        "channel": F.logsigmoid(torch.randn(B, T, H, K, dtype=torch.float64)),
        "strong": F.logsigmoid(torch.randn(B, T, H, K, dtype=torch.float64) * 4 - 8),  # ~ -8 per step
    }[gate]
    S0 = torch.randn(B, H, K, V, dtype=torch.float64)
    inputs = [q, k, v, S0] if g is None else [q, k, v, g, S0]
    if g is None:
        _compare(lambda q, k, v, s: chunk_gla(q, k, v, None, initial_state=s),
                 lambda q, k, v, s: recurrent_gla(q, k, v, None, initial_state=s), inputs)
    else:
        _compare(lambda q, k, v, g, s: chunk_gla(q, k, v, g, initial_state=s),
                 lambda q, k, v, g, s: recurrent_gla(q, k, v, g, initial_state=s), inputs)


@pytest.mark.parametrize("T", [1, 64, 150])
@pytest.mark.parametrize("gated", [False, True])
def test_chunk_delta_rule_matches_recurrent(T, gated):
    q, k, v = _qkv(T)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    beta = torch.rand(B, T, H, dtype=torch.float64)
    g = F.logsigmoid(torch.randn(B, T, H, dtype=torch.float64) + 2) if gated else None
    S0 = torch.randn(B, H, K, V, dtype=torch.float64)
    if gated:
        _compare(lambda q, k, v, b, g, s: chunk_delta_rule(q, k, v, b, g, initial_state=s),
                 lambda q, k, v, b, g, s: recurrent_delta_rule(q, k, v, b, g, initial_state=s),
                 [q, k, v, beta, g, S0])
    else:
        _compare(lambda q, k, v, b, s: chunk_delta_rule(q, k, v, b, initial_state=s),
                 lambda q, k, v, b, s: recurrent_delta_rule(q, k, v, b, initial_state=s),
                 [q, k, v, beta, S0])


_CHANNEL_DECAYS = {
    "moderate": lambda shape: F.logsigmoid(torch.randn(shape, dtype=torch.float64) + 2),
    "strong": lambda shape: F.logsigmoid(torch.randn(shape, dtype=torch.float64) * 4 - 8),  # ~ -8 per step
}


@pytest.mark.parametrize("T", [1, 64, 150])
@pytest.mark.parametrize("decay", sorted(_CHANNEL_DECAYS))
@pytest.mark.parametrize("chunk, sub", [(64, 16), (16, 4)])
def test_chunk_kda_matches_recurrent(T, decay, chunk, sub):
    q, k, v = _qkv(T)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    beta = torch.rand(B, T, H, dtype=torch.float64)
    g = _CHANNEL_DECAYS[decay]((B, T, H, K))
    S0 = torch.randn(B, H, K, V, dtype=torch.float64)
    _compare(lambda q, k, v, b, g, s: chunk_kda(q, k, v, b, g, initial_state=s, chunk_size=chunk, sub_chunk_size=sub),
             lambda q, k, v, b, g, s: recurrent_kda(q, k, v, b, g, initial_state=s), [q, k, v, beta, g, S0])


def test_kda_with_a_channel_constant_decay_is_gated_deltanet():
    q, k, v = _qkv(70)
    k = F.normalize(k, dim=-1)
    beta = torch.rand(B, 70, H, dtype=torch.float64)
    g = F.logsigmoid(torch.randn(B, 70, H, dtype=torch.float64))
    o1, s1 = chunk_kda(q, k, v, beta, g[..., None].expand(B, 70, H, K))
    o2, s2 = chunk_delta_rule(q, k, v, beta, g)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(s1, s2)


@pytest.mark.parametrize("T", [1, 64, 150])
@pytest.mark.parametrize("decay", sorted(_CHANNEL_DECAYS))
def test_chunk_dplr_matches_recurrent(T, decay):
    """RWKV-7's parameterisation: a = -kk, b = kk * a_rate for a normalised key kk."""
    q, k, v = _qkv(T)
    kk = F.normalize(torch.randn(B, T, H, K, dtype=torch.float64), dim=-1)
    rate = torch.rand(B, T, H, K, dtype=torch.float64)
    g = _CHANNEL_DECAYS[decay]((B, T, H, K))
    S0 = torch.randn(B, H, K, V, dtype=torch.float64)
    _compare(lambda q, k, v, a, b, g, s: chunk_dplr(q, k, v, a, b, g, scale=1.0, initial_state=s, chunk_size=32),
             lambda q, k, v, a, b, g, s: recurrent_dplr(q, k, v, a, b, g, scale=1.0, initial_state=s),
             [q, k, v, -kk, kk * rate, g, S0])


def test_dplr_with_a_equal_minus_beta_k_is_the_delta_rule():
    """S_t = (I - beta k k^T) S_{t-1} + beta k v^T: a = -k, b = beta k and k v^T scaled by beta."""
    q, k, v = _qkv(40)
    k = F.normalize(k, dim=-1)
    beta = torch.rand(B, 40, H, dtype=torch.float64)
    o1, s1 = chunk_dplr(q, k * beta[..., None], v, -k, k * beta[..., None], chunk_size=16)
    o2, s2 = recurrent_delta_rule(q, k, v, beta)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(s1, s2)


@pytest.mark.parametrize("T", [1, 45, 100])
def test_chunk_hgrn_matches_recurrent(T):
    x = torch.randn(B, T, 20, dtype=torch.float64)
    g = F.logsigmoid(torch.randn(B, T, 20, dtype=torch.float64) * 4)
    h0 = torch.randn(B, 20, dtype=torch.float64)
    _compare(chunk_hgrn, recurrent_hgrn, [x, g, h0])


def test_delta_rule_recurrence_is_the_paper_equation():
    """S_t = a_t S_{t-1}(I - b_t k k^T) + b_t v k^T (paper notation, S in R^{dv x dk}, o = S q)."""
    q, k, v = _qkv(5)
    k = F.normalize(k, dim=-1)
    beta = torch.rand(B, 5, H, dtype=torch.float64)
    g = F.logsigmoid(torch.randn(B, 5, H, dtype=torch.float64))
    o, S = recurrent_delta_rule(q, k, v, beta, g, scale=1.0)
    b, h = 1, 2
    P = torch.zeros(V, K, dtype=torch.float64)
    for t in range(5):
        kt, vt, bt, at = k[b, t, h], v[b, t, h], beta[b, t, h], g[b, t, h].exp()
        P = at * P @ (torch.eye(K, dtype=torch.float64) - bt * torch.outer(kt, kt)) + bt * torch.outer(vt, kt)
        torch.testing.assert_close(o[b, t, h], P @ q[b, t, h])
    torch.testing.assert_close(S[b, h], P.T)


def test_chunk_gla_does_not_overflow_in_float32():
    T = 256
    q, k, v = (t.float() for t in _qkv(T))
    g = torch.full((B, T, H, K), -30.0)  # a naive exp(-cumsum) form would overflow float32
    o, s = chunk_gla(q, k, v, g)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    o2, _ = recurrent_gla(q, k, v, g)
    torch.testing.assert_close(o, o2, atol=1e-5, rtol=1e-4)


def test_short_conv_streaming_equals_full():
    x = torch.randn(2, 20, 6, dtype=torch.float64)
    w = torch.randn(6, 4, dtype=torch.float64)
    full, _ = short_conv(x, w)
    cache, outs = None, []
    for t in range(20):
        y, cache = short_conv(x[:, t:t + 1], w, cache=cache)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), full)
    ref = torch.nn.functional.conv1d(x.transpose(1, 2), w[:, None], padding=3, groups=6)[..., :20].transpose(1, 2)
    torch.testing.assert_close(full, F.silu(ref))
