"""Head-wise (intra-layer) hybrids (issue 25, item 2): layout "heads:f", harness.model.headwise.

Every layer holds k = f * n_heads softmax heads beside the linear variant, both on the same input,
outputs summed. Checked: the conformance checks for every registered linear variant inside one,
the analytic KV cache (equal to 3:1's at the same depth for f = 1/4) against the bytes the cache
really holds, the layout's errors and canonical form, a suite dry-run, and a sliding window.
"""
from __future__ import annotations

import textwrap

import pytest
import torch

from harness.model import conformance
from harness.model.config import ModelConfig
from harness.model.costs import model_costs
from harness.model.headwise import HeadwiseHybrid
from harness.model.layout import LayoutError, canonical_layout, head_fraction, resolve_layout
from harness.model.lm import HybridLM
from harness.model.resolve import resolve_model
from harness.registry import VARIANTS

LINEAR = [v for v in VARIANTS.names() if v != "attention"]
D, V = 32, 64


def _costs(cfg, seq_len, batch=1, dtype=torch.float32):
    return {r["metric"]: r["value"] for r in model_costs(cfg, seq_len, batch, dtype)}


@pytest.mark.parametrize("variant", LINEAR)
def test_conformance_inside_a_headwise_layer(variant):
    """chunk == recurrent (outputs, states, gradients), causal, declared == held state in
    fp64/fp32/bf16 (one layer, n_heads 2, one softmax head), and prefill + decode == forward in a
    2-layer "heads:1/2" model."""
    conformance.check_headwise(variant)


@pytest.mark.parametrize("variant", LINEAR)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_model_cache_bytes_held_equal_declared_and_analytic(variant, dtype):
    cfg = ModelConfig(variant=variant, layout="heads:1/2", n_layers=2, d_model=D, n_heads=4, vocab_size=V)
    torch.manual_seed(0)
    model = HybridLM(cfg).to(dtype).eval()
    tokens = torch.randint(0, V, (2, 12))
    _, cache = model.prefill(tokens[:, :9])
    for t in (9, 10, 11):
        rows = _costs(cfg, t, 2, dtype)
        assert cache.nbytes() == model.expected_cache_bytes(2, t, dtype) == rows["cache_bytes"]
        kv = sum(v.numel() * v.element_size() for s in cache.states for k, v in s.items() if k.startswith("attn."))
        elem = torch.empty((), dtype=dtype).element_size()  # layers x (k, v) x batch x t x 2 heads x head_dim
        assert rows["kv_cache_bytes"] == kv == 2 * 2 * 2 * t * 2 * (D // 4) * elem
        model.decode_step(tokens[:, t], cache)


@pytest.mark.parametrize("variant", ["gla", "rwkv7", "mamba2"])
def test_prefill_decode_at_four_heads_and_in_the_variants_own_block(variant):
    block = {"rwkv7": "rwkv", "mamba2": "mamba"}.get(variant, "standard")
    for layout in ("heads:1/4", "heads:3/4"):
        torch.manual_seed(0)
        cfg = ModelConfig(variant=variant, layout=layout, n_layers=2, d_model=D, n_heads=4, vocab_size=V, block=block)
        model = HybridLM(cfg).double().eval()
        tokens = torch.randint(0, V, (2, 20))
        full = model(tokens)
        logits, cache = model.prefill(tokens[:, :13])
        torch.testing.assert_close(logits, full[:, :13], atol=1e-9, rtol=1e-7)
        for t in range(13, 20):
            torch.testing.assert_close(model.decode_step(tokens[:, t], cache), full[:, t], atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("seq_len", [1, 64, 1000])
def test_one_head_in_four_holds_the_kv_cache_of_one_layer_in_four(seq_len):
    """4 layers x 1/4 of the heads vs 1 full attention layer in 4: the same KV bytes, analytic and
    held after a prefill of L tokens."""
    base = {"variant": "gla", "n_layers": 4, "d_model": D, "n_heads": 4, "vocab_size": V}
    heads, ratio = ModelConfig(layout="heads:1/4", **base), ModelConfig(layout="3:1", **base)
    h, r = _costs(heads, seq_len), _costs(ratio, seq_len)
    assert h["kv_cache_bytes"] == r["kv_cache_bytes"] == 2 * seq_len * D * 4  # k and v, d_model, fp32
    assert h["state_bytes"] == 4 / 3 * r["state_bytes"]  # four linear states instead of three
    assert h["cache_reduction_vs_transformer"] == _costs(ModelConfig(layout="transformer", **base), seq_len)[
        "cache_bytes"] / h["cache_bytes"]
    if seq_len <= 64:
        _, cache = HybridLM(heads).prefill(torch.randint(0, V, (1, seq_len)))
        held_kv = sum(v.numel() * v.element_size() for s in cache.states for k, v in s.items() if k.startswith("attn."))
        assert held_kv == h["kv_cache_bytes"] and cache.nbytes() == h["cache_bytes"]


def test_flops_are_the_two_branches():
    cfg = ModelConfig(variant="gla", layout="heads:1/4", n_layers=4, d_model=64, n_heads=4)
    pure = _costs(ModelConfig(variant="gla", layout="pure", n_layers=4, d_model=64, n_heads=4), 512)
    rows = _costs(cfg, 512)
    assert rows["mixer_flops_per_token"] == pure["mixer_flops_per_token"] + 4 * 2 * 512 * 16  # + k heads x head_dim
    assert rows["mixer_flops_per_token_per_layer"] == pure["mixer_flops_per_token_per_layer"]  # the linear variant's


def test_parameters_and_state_are_prefixed_by_branch():
    model = HybridLM(ModelConfig(variant="gated_deltanet", layout="heads:1/2", n_layers=1, d_model=D, n_heads=2,
                                 vocab_size=V))
    mixer = model.layers[0].mixer
    assert isinstance(mixer, HeadwiseHybrid) and mixer.n_attn_heads == 1 and mixer.attn.head_dim == D // 2
    names = [n for n, _ in model.named_parameters() if ".mixer." in n]
    assert names and all(n.startswith(("layers.0.mixer.attn.", "layers.0.mixer.linear.")) for n in names)
    spec = mixer.state_spec(1, 5)
    assert {k for k, e in spec.items() if e.role == "kv"} == {"attn.k", "attn.v"}
    assert all(k.startswith("linear.") for k, e in spec.items() if e.role != "kv")
    assert model.n_full_attn_layers == 0


def test_not_a_registered_variant():
    assert all(VARIANTS.get(n) is not HeadwiseHybrid for n in VARIANTS.names())
    assert not any("head" in n for n in VARIANTS.names())


@pytest.mark.parametrize("spec,n_heads,fragment", [
    ("heads:1/3", 4, "not a whole number.*'heads:1/4', 'heads:1/2', 'heads:3/4'"),
    ("heads:0/4", 4, "strictly between 0 and 1"),
    ("heads:4/4", 4, "strictly between 0 and 1"),
    ("heads:3/2", 4, "strictly between 0 and 1"),
    ("heads:1/0", 4, "strictly between 0 and 1"),
    ("heads:quarter", 4, "such as 'heads:1/4'"),
    ("heads:1/2", 1, "no heads to split"),
])
def test_impossible_head_fractions_fail_clearly(spec, n_heads, fragment):
    with pytest.raises(LayoutError, match=fragment):
        resolve_layout(spec, 4, n_heads=n_heads)
    with pytest.raises(ValueError, match=fragment):
        HybridLM(ModelConfig(variant="gla", layout=spec, n_layers=2, d_model=D, n_heads=n_heads, vocab_size=V))


def test_headwise_takes_no_placement_nor_attn_heads():
    with pytest.raises(LayoutError, match="head-wise layout 'heads:1/4'"):
        resolve_layout("heads:1/4", 4, "top")
    with pytest.raises(ValueError, match="attn_heads"):
        resolve_model({"variant": "gla", "layout": "heads:1/4", "n_heads": 4, "attn_heads": 2})


def test_equal_fractions_are_one_cell():
    assert resolve_layout("heads:2/8", 3) == ["H"] * 3
    assert canonical_layout(resolve_layout("heads:2/8", 3), head_fraction("heads:2/8")) == ("heads:1/4", "interleave")
    a = resolve_model({"variant": "gla", "layout": "heads:2/8", "n_heads": 4, "d_model": 64})
    b = resolve_model({"variant": "gla", "layout": " heads:1/4 ", "n_heads": 4, "d_model": 64})
    assert a == b and a["layout"] == "heads:1/4" and a["variant"] == "gla"
    # a head-wise layout has attention: its window stays (one cell per window)
    assert resolve_model({"variant": "gla", "layout": "heads:1/2", "n_heads": 4, "window": 16})["window"] == 16
    # softmax "attention" as the variant is a Transformer whatever the layout, as before
    assert resolve_model({"variant": "attention", "layout": "heads:1/2", "n_heads": 4})["layout"] == "transformer"


def test_window_bounds_the_headwise_kv_cache():
    W, T = 5, 16
    torch.manual_seed(0)
    cfg = ModelConfig(variant="gla", layout="heads:1/2", n_layers=2, d_model=D, n_heads=2, vocab_size=V, window=W)
    model = HybridLM(cfg).double().eval()
    tokens = torch.randint(0, V, (2, T))
    full = model(tokens)
    _, cache = model.prefill(tokens[:, :3])
    for t in range(3, T):
        assert all(s["attn.k"].shape[2] == min(t, W) for s in cache.states)
        rows = _costs(cfg, t, 2, torch.float64)
        assert cache.nbytes() == rows["cache_bytes"]
        assert rows["kv_cache_bytes"] == 2 * 2 * 2 * min(t, W) * (D // 2) * 8
        torch.testing.assert_close(model.decode_step(tokens[:, t], cache), full[:, t], atol=1e-9, rtol=1e-7)


def test_report_places_one_head_in_four_beside_one_layer_in_four():
    from harness.report.style import attn_fraction, is_hybrid, sort_layouts

    assert attn_fraction("heads:1/4") == attn_fraction("3:1") == 0.25
    assert attn_fraction("heads:1/2") == 0.5 and is_hybrid("heads:1/2")
    assert sort_layouts(["transformer", "heads:1/2", "1:1", "heads:1/4", "3:1", "pure"]) == [
        "pure", "3:1", "heads:1/4", "1:1", "heads:1/2", "transformer"]


def test_conversion_refuses_a_headwise_model():
    from harness.integrations.convert import ConversionError, convert_state_dict

    cfg = ModelConfig(variant="gla", layout="heads:1/2", n_layers=2, d_model=D, n_heads=2, vocab_size=V)
    with pytest.raises(ConversionError, match="converted-from-nothing"):
        convert_state_dict({}, cfg)


def test_suite_dry_run_lists_the_headwise_cells(tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.sweep import expand_cells, load_suite

    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""\
        name: t
        task: analytic
        model: {n_layers: 4, d_model: 64, n_heads: 4}
        axes: {variant: gla, layout: [pure, '3:1', 'heads:1/4', 'heads:2/8']}
        """))
    cells = expand_cells(load_suite(path), [])
    assert sorted(c.model["layout"] for c in cells) == ["3:1", "heads:1/4", "pure"]
    assert {c.model["layout"]: c.n_full_attn_layers for c in cells} == {"pure": 0, "3:1": 1, "heads:1/4": 0}
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run", "--out", str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    assert "t: 3 cells" in result.output and "heads:1/4" in result.output


@pytest.mark.parametrize("variant", ["rwkv7", "mamba2", "gla"])
def test_init_hooks_reach_both_branches_and_the_meta_build_matches(variant):
    """The model's `init_weights` runs every branch's `init_parameters` with the model's depth
    (RWKV-7's depth-dependent init included): running the hooks again draws nothing and changes
    nothing, and the meta-device build (analytic costs) has the same parameters."""
    from harness.model.mixer import Mixer

    cfg = ModelConfig(variant=variant, layout="heads:1/2", n_layers=3, d_model=D, n_heads=2, vocab_size=V)
    torch.manual_seed(0)
    model = HybridLM(cfg)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Mixer):
                m.init_parameters(cfg.n_layers)
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())
    with torch.device("meta"):
        meta = HybridLM(cfg)
    assert [(k, v.shape) for k, v in meta.state_dict().items()] == [(k, v.shape) for k, v in first.items()]


def test_checkpoint_round_trip(tmp_path):
    from harness.model.checkpoint import load_checkpoint, save_checkpoint

    cfg = ModelConfig(variant="deltanet", layout="heads:1/4", n_layers=2, d_model=D, n_heads=4, vocab_size=V)
    torch.manual_seed(0)
    model = HybridLM(cfg).eval()
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ckpt"))
    tokens = torch.randint(0, V, (1, 9))
    assert loaded.cfg.layout == "heads:1/4"
    torch.testing.assert_close(loaded(tokens), model(tokens))
