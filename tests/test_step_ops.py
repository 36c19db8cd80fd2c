"""The one-token decode ops (harness.ops.step) and the elementwise short conv equal their references."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.ops import recurrent_delta_rule, recurrent_dplr, recurrent_gla, recurrent_hgrn, short_conv
from harness.ops.dispatch import get_op
from harness.ops.dplr import dplr_step
from harness.ops.step import delta_rule_step, gla_step, hgrn_step

B, H, K, V = 2, 3, 8, 5
D64 = torch.float64


def _qkv(g, dtype=D64):
    q = torch.randn(B, 1, H, K, generator=g, dtype=dtype)
    k = F.normalize(torch.randn(B, 1, H, K, generator=g, dtype=dtype), dim=-1)
    v = torch.randn(B, 1, H, V, generator=g, dtype=dtype)
    return q, k, v


def _state(g, with_state, shape=(B, H, K, V)):
    return torch.randn(*shape, generator=g, dtype=D64) if with_state else None


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("gate", ["none", "scalar", "channel"])
def test_gla_step_equals_recurrent(with_state, gate):
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        q, k, v = _qkv(g)
        gk = {"none": None,
              "scalar": F.logsigmoid(3 * torch.randn(B, 1, H, generator=g, dtype=D64)),
              "channel": F.logsigmoid(3 * torch.randn(B, 1, H, K, generator=g, dtype=D64))}[gate]
        S0 = _state(g, with_state)
        for scale in (None, 0.3):
            o_ref, S_ref = recurrent_gla(q, k, v, gk, scale=scale, initial_state=S0)
            o, S = gla_step(q, k, v, gk, scale=scale, initial_state=S0)
            assert o.shape == o_ref.shape and S.shape == S_ref.shape
            torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(S, S_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("gated", [False, True, "channel"])
def test_delta_rule_step_equals_recurrent(with_state, gated):
    """Scalar decay (Gated DeltaNet) and per-channel decay (KDA)."""
    g = torch.Generator().manual_seed(2)
    for neg in (False, True):  # beta in (0, 1) and in (0, 2) (negative eigenvalues)
        q, k, v = _qkv(g)
        beta = torch.rand(B, 1, H, generator=g, dtype=D64) * (2 if neg else 1)
        shape = (B, 1, H, K) if gated == "channel" else (B, 1, H)
        gd = F.logsigmoid(3 * torch.randn(*shape, generator=g, dtype=D64)) if gated else None
        S0 = _state(g, with_state)
        o_ref, S_ref = recurrent_delta_rule(q, k, v, beta, gd, initial_state=S0)
        o, S = delta_rule_step(q, k, v, beta, gd, initial_state=S0)
        torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(S, S_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("decayed", [False, True])
def test_dplr_step_equals_recurrent(with_state, decayed):
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        q, k, v = _qkv(g)
        kk = F.normalize(torch.randn(B, 1, H, K, generator=g, dtype=D64), dim=-1)
        a, b = -kk, kk * torch.rand(B, 1, H, K, generator=g, dtype=D64)
        w = F.logsigmoid(3 * torch.randn(B, 1, H, K, generator=g, dtype=D64)) if decayed else None
        S0 = _state(g, with_state)
        o_ref, S_ref = recurrent_dplr(q, k, v, a, b, w, scale=1.0, initial_state=S0)
        o, S = dplr_step(q, k, v, a, b, w, scale=1.0, initial_state=S0)
        torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(S, S_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_state", [False, True])
def test_hgrn_step_equals_recurrent(with_state):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, 1, 7, generator=g, dtype=D64)
    f = F.logsigmoid(3 * torch.randn(B, 1, 7, generator=g, dtype=D64))
    h0 = _state(g, with_state, (B, 7))
    o_ref, h_ref = recurrent_hgrn(x, f, h0)
    o, h = hgrn_step(x, f, h0)
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)  # addcmul may fuse the multiply-add
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)


def test_step_ops_keep_half_inputs_and_fp32_state():
    g = torch.Generator().manual_seed(4)
    q, k, v = (t.to(torch.bfloat16) for t in _qkv(g, torch.float32))
    o, S = gla_step(q, k, v, None, initial_state=torch.zeros(B, H, K, V))
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
    o_ref, S_ref = recurrent_gla(q, k, v, None, initial_state=torch.zeros(B, H, K, V))
    torch.testing.assert_close(S, S_ref)
    torch.testing.assert_close(o.float(), o_ref.float())


def test_step_ops_refuse_more_than_one_token():
    q = torch.randn(1, 2, H, K)
    with pytest.raises(ValueError, match="one token"):
        gla_step(q, q, q)


def test_dispatch_picks_step_for_one_recurrent_token_only():
    assert get_op("gla", "recurrent", "torch", seq_len=1) is gla_step
    assert get_op("delta_rule", "recurrent", "torch", seq_len=1) is delta_rule_step
    assert get_op("hgrn", "recurrent", "torch", seq_len=1) is hgrn_step
    assert get_op("gla", "recurrent", "torch", seq_len=2) is recurrent_gla
    assert get_op("gla", "recurrent", "torch") is recurrent_gla
    assert get_op("gla", "chunk", "torch", seq_len=1) is not gla_step


@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("T", [1, 2, 5, 9])
@pytest.mark.parametrize("with_cache", [False, True])
def test_elementwise_short_conv_equals_conv1d(activation, bias, T, with_cache):
    g = torch.Generator().manual_seed(5)
    D, W = 6, 4
    x = torch.randn(B, T, D, generator=g, dtype=D64)
    w = torch.randn(D, W, generator=g, dtype=D64)
    b = torch.randn(D, generator=g, dtype=D64) if bias else None
    cache = torch.randn(B, W - 1, D, generator=g, dtype=D64) if with_cache else None
    y_ref, c_ref = short_conv(x, w, b, cache=cache, activation=activation, impl="conv1d")
    y, c = short_conv(x, w, b, cache=cache, activation=activation, impl="elementwise")
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=0)


def test_elementwise_short_conv_gradients_equal_conv1d():
    g = torch.Generator().manual_seed(6)
    D, W, T = 5, 4, 7
    x = torch.randn(B, T, D, generator=g, dtype=D64)
    w = torch.randn(D, W, generator=g, dtype=D64)
    cache = torch.randn(B, W - 1, D, generator=g, dtype=D64)

    def grads(impl):
        xs, ws, cs = (t.clone().requires_grad_(True) for t in (x, w, cache))
        y, c = short_conv(xs, ws, cache=cs, impl=impl)
        (y.pow(2).sum() + c.sum()).backward()
        return xs.grad, ws.grad, cs.grad

    for a, b in zip(grads("elementwise"), grads("conv1d")):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_streaming_short_conv_decode_equals_full():
    g = torch.Generator().manual_seed(7)
    D, W, T = 4, 4, 10
    x = torch.randn(B, T, D, generator=g, dtype=D64)
    w = torch.randn(D, W, generator=g, dtype=D64)
    full, _ = short_conv(x, w, impl="conv1d")
    y, cache = short_conv(x[:, :3], w)
    outs = [y]
    for t in range(3, T):
        y, cache = short_conv(x[:, t : t + 1], w, cache=cache)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant,kwargs", [("gated_deltanet", {}), ("deltanet", {}),
                                            ("hgrn", {"use_short_conv": True}), ("gla", {"use_short_conv": True})])
def test_decode_steps_with_joint_short_convs_equal_forward(variant, kwargs):
    """Decode (the joint short-conv step, the step ops) reproduces the chunked training forward,
    token by token, in fp64."""
    from harness.registry import get_variant

    torch.manual_seed(0)
    mixer = get_variant(variant)(16, 2, **kwargs).double()
    x = torch.randn(2, 9, 16, dtype=D64)
    full, _ = mixer(x)  # autograd on: the separate projections and the per-conv path
    with torch.no_grad():
        y, state = mixer(x[:, :4])
        outs = [y]
        for t in range(4, 9):
            y, state = mixer(x[:, t : t + 1], state, offset=t, mode="recurrent")
            outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), full.detach(), rtol=1e-10, atol=1e-10)
    spec = mixer.state_spec(2, 9)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(e.shape) for k, e in spec.items()}


def test_joint_conv_weight_cache_follows_weight_updates():
    """The concatenated short-conv weights of the joint decode step (Mixer._joint_conv_step) are
    rebuilt when a weight is updated in place or replaced."""
    from harness.model.modules import ShortConv, _fused_weight

    a, b = ShortConv(3, 4), ShortConv(2, 4)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(_fused_weight([a, b]), torch.cat([a.weight, b.weight]))
            a.weight.mul_(2)  # in place, as an optimiser step does
        b.weight = torch.nn.Parameter(torch.randn(2, 1, 4))  # a new tensor
        torch.testing.assert_close(_fused_weight([a, b]), torch.cat([a.weight, b.weight]))
        assert _fused_weight([a, ShortConv(2, 4, bias=True)]) is None  # biased: no joint step


@pytest.mark.parametrize("variant", ["gated_deltanet", "gla"])
@pytest.mark.parametrize("fused", [True, False])
def test_no_grad_caches_follow_optimiser_steps(variant, fused):
    """Evaluation between training steps sees the current weights. AdamW(fused=True) (what
    harness.runtime.train uses) updates in place without bumping `_version`; a cache checked by version
    alone kept serving the first evaluation's weights, so the model trained but scored at chance."""
    from harness.registry import get_variant

    torch.manual_seed(0)
    mixer = get_variant(variant)(16, 2)
    opt = torch.optim.AdamW(mixer.parameters(), lr=0.1, fused=fused)
    x = torch.randn(2, 5, 16)
    for _ in range(3):
        with torch.no_grad():  # an early-stop evaluation: builds the caches
            y_eval, state = mixer(x[:, :4])
            y_step, _ = mixer(x[:, 4:], state, offset=4, mode="recurrent")  # the joint conv step
        y_train, _ = mixer(x)
        torch.testing.assert_close(torch.cat([y_eval, y_step], 1), y_train.detach(), rtol=1e-4, atol=1e-5)
        y_train.square().mean().backward()
        opt.step()
        opt.zero_grad()
