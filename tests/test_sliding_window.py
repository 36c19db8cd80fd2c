"""Sliding-window attention (issue 25, item 1): `ModelConfig.window` / `Attention(window=W)`.

The query at position t sees the keys at t - W + 1 .. t; the KV cache holds the last min(t, W)
tokens. Checked in float64 against a step-by-step reference, through prefill + decode, against the
declared and analytic cache bytes and FLOPs, and as a suite axis whose default renames no cell.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import textwrap

import pytest
import torch

from harness.model import conformance
from harness.model.config import ModelConfig
from harness.model.costs import crossover_length, model_costs
from harness.model.lm import HybridLM
from harness.model.modules import rotary_pair, split_heads
from harness.model.resolve import resolve_model
from harness.registry import get_variant
from harness.sweep import SuiteError, expand_cells, load_suite

D, H, B = 32, 4, 2


def make_attention(window, n_kv_heads=None, seed=0):
    torch.manual_seed(seed)
    attn = get_variant("attention")(D, H, n_kv_heads=n_kv_heads, window=window).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return attn


def reference(attn, x, window):
    """Softmax over the band, one query at a time: query t attends keys max(0, t - W + 1) .. t."""
    q, k, v = (split_heads(t, attn.head_dim) for t in (attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)))
    q, k = rotary_pair(q, k, 0, attn.rope_theta)  # [B, T, H, D]
    rep = attn.n_heads // attn.n_kv_heads
    k, v = k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2)
    outs = []
    for t in range(x.shape[1]):
        lo = 0 if window is None else max(0, t - window + 1)
        scores = torch.einsum("bhd,bshd->bhs", q[:, t], k[:, lo:t + 1]) / math.sqrt(attn.head_dim)
        outs.append(torch.einsum("bhs,bshd->bhd", scores.softmax(-1), v[:, lo:t + 1]))
    return attn.o_proj(torch.stack(outs, 1).flatten(-2))


def grads(attn, x, y):
    attn.zero_grad()
    x.grad = None
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    return [x.grad.clone()] + [p.grad.clone() for p in attn.parameters()]


@pytest.mark.parametrize("window, n_kv_heads", [(1, None), (5, None), (8, 2), (40, None), (None, 2)])
def test_forward_and_backward_equal_the_band_reference(window, n_kv_heads):
    attn = make_attention(window, n_kv_heads)
    x = torch.randn(B, 23, D, dtype=torch.float64, requires_grad=True)
    y, state = attn(x)
    g = grads(attn, x, y)
    y_ref = reference(attn, x, window)
    g_ref = grads(attn, x, y_ref)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-8)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    assert state["k"].shape[2] == (23 if window is None else min(23, window))


def test_a_window_past_the_sequence_is_full_attention():
    x = torch.randn(B, 12, D, dtype=torch.float64)
    y_full, s_full = make_attention(None)(x)
    y_win, s_win = make_attention(12)(x)
    assert torch.equal(y_full, y_win) and torch.equal(s_full["k"], s_win["k"])
    assert not torch.allclose(make_attention(11)(x)[0][:, -1], y_full[:, -1])


def test_bad_window_is_refused():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            get_variant("attention")(D, H, window=bad)


def test_conformance_checks_pass_with_a_window(monkeypatch):
    """The mixer-level conformance checks (chunk == recurrent, causal, declared state == held state
    in fp64/fp32/bf16, metadata, init) on attention with a window shorter than their 70 tokens."""
    monkeypatch.setattr(conformance, "make_mixer", functools.partial(conformance.make_mixer, window=16))
    conformance.check_metadata("attention")
    conformance.check_chunk_equals_recurrent("attention")
    conformance.check_causal("attention")
    conformance.check_state_bytes("attention")


def _model(layout, window, variant="gla"):
    torch.manual_seed(0)
    cfg = ModelConfig(variant=variant, layout=layout, n_layers=2, d_model=D, n_heads=2, vocab_size=61, window=window)
    return HybridLM(cfg).double().eval()


@pytest.mark.parametrize("layout", ["transformer", "1:1"])
@pytest.mark.parametrize("split", [3, 7, 8, 19])
def test_prefill_then_decode_equals_forward(layout, split):
    """T = 30 > W = 7: prefill below, at and above the window, then one token at a time, then a
    multi-token continuation from a cache (a band mask with a past)."""
    W, T = 7, 30
    model = _model(layout, W)
    tokens = torch.randint(0, 61, (B, T))
    full = model(tokens)
    logits, cache = model.prefill(tokens[:, :split])
    torch.testing.assert_close(logits, full[:, :split], atol=1e-9, rtol=1e-7)
    for t in range(split, 24):
        torch.testing.assert_close(model.decode_step(tokens[:, t], cache), full[:, t], atol=1e-9, rtol=1e-7)
        attn_k = [s["k"] for s in cache.states if "k" in s]
        assert attn_k and all(k.shape[2] == min(t + 1, W) for k in attn_k)
    with torch.no_grad():
        rest = model(tokens[:, 24:], cache)
    torch.testing.assert_close(rest, full[:, 24:], atol=1e-9, rtol=1e-7)
    assert cache.seen_tokens == T


@pytest.mark.parametrize("layout", ["transformer", "1:1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_bytes_held_equal_declared_and_analytic(layout, dtype):
    W = 6
    model = _model(layout, W).to(dtype)
    tokens = torch.randint(0, 61, (1, 16))
    _, cache = model.prefill(tokens[:, :3])
    for t in range(3, 16):
        held = cache.nbytes()
        declared = model.expected_cache_bytes(1, t, dtype)
        rows = {r["metric"]: r["value"] for r in model_costs(model.cfg, t, 1, dtype)}
        assert held == declared == rows["cache_bytes"], (t, held, declared, rows["cache_bytes"])
        n_attn = model.kinds.count("A")
        elem = torch.empty((), dtype=dtype).element_size()
        assert rows["kv_cache_bytes"] == n_attn * 2 * min(t, W) * D * elem
        model.decode_step(tokens[:, t], cache)


def test_cache_stops_growing_at_the_window():
    cfg = ModelConfig(layout="transformer", n_layers=2, d_model=64, n_heads=2, window=256)
    full = dataclasses.replace(cfg, window=None)
    by_len = {n: {r["metric"]: r["value"] for r in model_costs(cfg, n)} for n in (128, 256, 1024, 8192)}
    assert by_len[128]["cache_bytes"] < by_len[256]["cache_bytes"] == by_len[1024]["cache_bytes"]
    assert by_len[8192]["cache_bytes"] == 2 * 2 * 256 * 64 * 4  # layers x (k, v) x W x d_model x fp32
    full_8k = {r["metric"]: r["value"] for r in model_costs(full, 8192)}
    # the reduction is against the full-attention Transformer
    assert by_len[8192]["cache_reduction_vs_transformer"] == full_8k["cache_bytes"] / by_len[8192]["cache_bytes"] == 32
    assert full_8k["cache_reduction_vs_transformer"] == 1


@pytest.mark.parametrize("seq_len", [1, 100, 256, 257, 4096])
def test_analytic_flops_use_min_of_length_and_window(seq_len):
    W = 256
    cfg = ModelConfig(layout="transformer", n_layers=3, d_model=64, n_heads=4, window=W)
    rows = {r["metric"]: r["value"] for r in model_costs(cfg, seq_len)}
    assert rows["mixer_flops_per_token_per_layer"] == 2 * min(seq_len, W) * 64
    assert rows["mixer_flops_per_token"] == 3 * 2 * min(seq_len, W) * 64
    full = {r["metric"]: r["value"] for r in model_costs(dataclasses.replace(cfg, window=None), seq_len)}
    assert rows["model_flops_per_token"] - rows["mixer_flops_per_token"] == (
        full["model_flops_per_token"] - full["mixer_flops_per_token"])  # the projections do not change


def test_crossover_with_a_window():
    cfg = ModelConfig(variant="gla", layout="1:1", n_layers=2, d_model=64, n_heads=2)
    plain = crossover_length(cfg)  # 56 tokens: GLA's 7 * H * d_k * d_v over attention's 2 * d_model
    assert 0 < plain < math.inf
    assert crossover_length(dataclasses.replace(cfg, window=int(2 * plain))) == plain
    assert crossover_length(dataclasses.replace(cfg, window=int(plain) - 1)) == math.inf  # SWA never costs more


def test_identity_default_renames_no_cell_and_no_attention_drops_the_window():
    assert "window" not in ModelConfig().identity_dict()
    assert ModelConfig(window=64).identity_dict()["window"] == 64
    assert "window" not in resolve_model({"variant": "gla", "layout": "pure", "window": 64})
    assert resolve_model({"variant": "gla", "layout": "1:1", "window": 64})["window"] == 64
    assert resolve_model({"layout": "transformer", "window": 64})["window"] == 64


BASE = """\
name: t
task: analytic
model: {n_layers: 4, d_model: 64, n_heads: 2}
"""


def _write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_suite_sweeps_window_next_to_layout(tmp_path):
    axes = "axes: {variant: gla, layout: [pure, '3:1', transformer], window: [null, 64, 256]}\n"
    cells = expand_cells(load_suite(_write(tmp_path, BASE + axes)), [])
    got = sorted((c.model["layout"], c.model.get("window", 0)) for c in cells)
    # pure has no attention layer: its three windows are one cell
    assert got == sorted([("pure", 0), ("3:1", 0), ("3:1", 64), ("3:1", 256),
                          ("transformer", 0), ("transformer", 64), ("transformer", 256)])
    plain = expand_cells(load_suite(_write(tmp_path, BASE + "axes: {variant: gla, layout: [pure, '3:1']}\n")), [])
    ids = {c.cell_id for c in cells if c.model.get("window") is None}
    assert {c.cell_id for c in plain} <= ids  # window null is the cell without the axis
    assert all(c.model_config().window == c.model.get("window") for c in cells)


@pytest.mark.parametrize("bad", ["0", "'64'", "2.5"])
def test_suite_refuses_a_bad_window(tmp_path, bad):
    with pytest.raises(SuiteError, match="window"):
        expand_cells(load_suite(_write(tmp_path, BASE + f"axes: {{layout: transformer, window: [{bad}]}}\n")))


def test_fla_transformer_window_size_converts():
    from harness.model.fla_config import FlaConfig

    cls = get_variant("attention")
    fields = cls.fla_config_fields(FlaConfig({"model_type": "transformer", "hidden_size": 64, "num_heads": 4,
                                              "window_size": 512}))
    assert fields["window"] == 512 and fields["layout"] == "transformer"
    assert "window" not in cls.fla_config_fields(FlaConfig({"model_type": "transformer", "hidden_size": 64}))
