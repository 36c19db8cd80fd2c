import dataclasses

import pytest
import torch

from harness.model.config import ModelConfig
from harness.model.costs import crossover_length, model_costs
from harness.model.layout import LayoutError, canonical_layout, resolve_layout
from harness.model.lm import HybridLM, build_model


@pytest.mark.parametrize("spec,n,expected", [
    ("pure", 4, "LLLL"),
    ("transformer", 3, "AAA"),
    ("3:1", 8, "LLLALLLA"),
    ("1:1", 4, "LALA"),
    ("24:1", 25, "L" * 24 + "A"),
    ("LLAL", 4, "LLAL"),
    ("attn:3,7,11", 12, "LLLALLLALLLA"),
])
def test_resolve_layout(spec, n, expected):
    assert "".join(resolve_layout(spec, n)) == expected


def test_layout_round_trips_through_its_canonical_form():
    for spec, n in [("pure", 4), ("transformer", 2), ("3:1", 8), ("1:1", 6)]:
        assert canonical_layout(resolve_layout(spec, n)) == (spec, "interleave")
    assert canonical_layout(list("LLAL")) == ("3:1", "attn:2")


@pytest.mark.parametrize("spec,n,fragment", [
    ("6:1", 24, "multiple of 7"),
    ("24:1", 8, "multiple of 25"),
    ("0:1", 4, ">= 1"),
    ("LLA", 4, "has 3 layers"),
    ("attn:9", 4, "outside 0..3"),
    ("three-to-one", 4, "unknown layout"),
])
def test_impossible_layouts_fail_clearly(spec, n, fragment):
    with pytest.raises(LayoutError, match=fragment):
        resolve_layout(spec, n)


def test_model_follows_layout():
    cfg = ModelConfig(variant="gla", layout="3:1", n_layers=8, d_model=32, n_heads=2, vocab_size=40)
    model = HybridLM(cfg)
    names = [type(b.mixer).__name__ for b in model.layers]
    assert names == ["GLA", "GLA", "GLA", "Attention"] * 2
    assert model.n_full_attn_layers == 2
    logits = model(torch.randint(0, 40, (2, 10)))
    assert logits.shape == (2, 10, 40)


def test_model_rejects_bad_ratio_at_construction():
    with pytest.raises(LayoutError, match="multiple of 4"):
        HybridLM(ModelConfig(layout="3:1", n_layers=6))


def test_unknown_variant_in_config():
    with pytest.raises(KeyError, match="Did you mean 'gla'"):
        HybridLM(ModelConfig(variant="glaa", layout="pure", n_layers=1))


def test_bad_mixer_kwargs_named():
    with pytest.raises(TypeError, match="mixer_kwargs"):
        HybridLM(ModelConfig(variant="gla", n_layers=1, mixer_kwargs={"nonsense": 1}))


def test_cache_bytes_after_prefill_match_declared_and_analytic():
    cfg = ModelConfig(variant="gated_deltanet", layout="1:1", n_layers=4, d_model=32, n_heads=2, vocab_size=40)
    model = HybridLM(cfg).eval()
    tokens = torch.randint(0, 40, (3, 33))
    _, cache = model.prefill(tokens)
    assert cache.nbytes() == model.expected_cache_bytes(3, 33)
    rows = {r["metric"]: r["value"] for r in model_costs(cfg, 33, batch=3)}
    assert rows["cache_bytes"] == cache.nbytes()
    assert rows["state_bytes"] + rows["kv_cache_bytes"] == rows["cache_bytes"]
    model.decode_step(tokens[:, 0], cache)  # the KV part grows by one token, the state does not
    kv_per_token = rows["kv_cache_bytes"] / 33
    assert cache.nbytes() == rows["cache_bytes"] + kv_per_token


def test_paper_flop_formulas_on_the_13b_gdn_shape():
    """paper Table 7 on d_model 2048, 8 heads of 256: 8 d^2 / H and 2 L d at L = 4096."""
    cfg = ModelConfig(variant="gated_deltanet", layout="pure", n_layers=24, d_model=2048, n_heads=8,
                      vocab_size=32000, mixer_kwargs={"head_dim": 256, "expand_v": 1.0})
    rows = {r["metric"]: r["value"] for r in model_costs(cfg, 4096)}
    assert rows["mixer_flops_per_token_per_layer"] == 8 * 2048**2 / 8 == 4_194_304
    tf = {r["metric"]: r["value"] for r in model_costs(dataclasses.replace(cfg, layout="transformer"), 4096)}
    assert tf["mixer_flops_per_token_per_layer"] == 2 * 4096 * 2048 == 16_777_216
    assert crossover_length(cfg) == 1024  # L* = k d / (2H)


@pytest.mark.parametrize("variant,coeff", [("retnet", 5), ("gla", 7), ("hgrn2", 7), ("deltanet", 8)])
def test_paper_flop_coefficients(variant, coeff):
    kwargs = {"retnet": {"expand_v": 1.0}, "gla": {"expand_k": 1.0}}.get(variant, {})
    cfg = ModelConfig(variant=variant, layout="pure", n_layers=1, d_model=512, n_heads=4, mixer_kwargs=kwargs)
    rows = {r["metric"]: r["value"] for r in model_costs(cfg, 100)}
    assert rows["mixer_flops_per_token_per_layer"] == coeff * 512**2 / 4


def test_hgrn_flops_are_5d():
    cfg = ModelConfig(variant="hgrn", layout="pure", n_layers=1, d_model=512, n_heads=4)
    rows = {r["metric"]: r["value"] for r in model_costs(cfg, 100)}
    assert rows["mixer_flops_per_token_per_layer"] == 5 * 512


def test_kv_cache_reduction_follows_full_layer_count():
    cfg = ModelConfig(variant="gla", layout="3:1", n_layers=8, d_model=64, n_heads=2)
    rows = {r["metric"]: r["value"] for r in model_costs(cfg, 8192)}
    tf = {r["metric"]: r["value"] for r in model_costs(dataclasses.replace(cfg, layout="transformer"), 8192)}
    assert rows["kv_cache_bytes"] * 4 == tf["kv_cache_bytes"]  # 2 of 8 layers keep a KV cache
    assert rows["cache_reduction_vs_transformer"] == pytest.approx(tf["cache_bytes"] / rows["cache_bytes"])


def test_prefill_last_only_matches_the_full_logits():
    cfg = ModelConfig(variant="gla", layout="1:1", n_layers=2, d_model=32, n_heads=2, vocab_size=40)
    model = HybridLM(cfg).eval()
    tokens = torch.randint(0, 40, (2, 21))
    full, cache_full = model.prefill(tokens)
    last, cache_last = model.prefill(tokens, last_only=True)
    assert last.shape == (2, 1, 40)
    torch.testing.assert_close(last[:, 0], full[:, -1])
    assert cache_last.nbytes() == cache_full.nbytes()


@pytest.mark.slow
def test_compiled_decode_equals_eager_decode():
    """HybridLM.decode_fn(compile=True) is the same math as decode_step: a hybrid (a linear and a
    softmax layer, so a fixed state and a growing KV cache, which recompiles with dynamic
    shapes) decodes the same logits, step after step, and leaves the cache in the same state."""
    torch.manual_seed(0)
    cfg = ModelConfig(variant="gated_deltanet", layout="1:1", n_layers=2, d_model=32, n_heads=2, vocab_size=64)
    model = build_model(cfg, "cpu", torch.float32, "torch").eval()
    prompt = torch.randint(0, 64, (2, 24))
    _, eager_cache = model.prefill(prompt)
    _, compiled_cache = model.prefill(prompt)
    step = model.decode_fn(compile=True)
    tok = torch.randint(0, 64, (2,))
    for _ in range(4):
        want = model.decode_step(tok, eager_cache)
        got = step(tok, compiled_cache)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        tok = want.argmax(-1)
    assert compiled_cache.seen_tokens == eager_cache.seen_tokens == 28
    for a, b in zip(compiled_cache.states, eager_cache.states):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compiled_decode_compiles_once_whatever_the_prompt_length():
    """A pure linear model's compiled decode compiles for its first prompt (a graph for the
    prompt's state layout, one for its own step's), and then prompts of other lengths (prefill's
    conv tails are views with length-dependent strides) and every later position reuse it; it
    decodes what the eager step decodes."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # no shapes marked dynamic by other models compiled in this process
    torch.manual_seed(0)
    cfg = ModelConfig(variant="gated_deltanet", layout="pure", n_layers=2, d_model=32, n_heads=2, vocab_size=64)
    model = build_model(cfg, "cpu", torch.float32, "torch").eval()
    step = model.decode_fn(compile=True)
    frames = None
    for length in (24, 41):
        prompt = torch.randint(0, 64, (1, length))
        _, eager_cache = model.prefill(prompt)
        _, compiled_cache = model.prefill(prompt)
        tok = torch.randint(0, 64, (1,))
        for _ in range(3):
            want = model.decode_fn()(tok, eager_cache)
            torch.testing.assert_close(step(tok, compiled_cache), want, rtol=1e-5, atol=1e-5)
            tok = want.argmax(-1)
        frames = counters["frames"]["ok"] if frames is None else frames
    assert counters["frames"]["ok"] == frames, "compiled decode recompiled for a new prompt length or position"


def _counting_compiled_step(model, calls: list, fail: bool = False):
    """A stand-in for decode_fn(compile=True): the eager step, counting its calls (or raising)."""
    def step(token, cache):
        calls.append(cache.seen_tokens)
        if fail:
            raise RuntimeError("no compiler")
        return model.decode_fn()(token, cache)
    return step


def test_decode_step_switches_to_the_compiled_step_after_its_threshold(monkeypatch):
    """decode_step is eager for `compile_decode_after` steps, then runs the compiled step (built
    once); None or HARNESS_COMPILE_DECODE=0 keep it eager; a compiled step that fails warns once and
    decodes eagerly from the untouched cache. Logits are the eager ones throughout."""
    torch.manual_seed(0)
    cfg = ModelConfig(variant="gla", layout="1:1", n_layers=2, d_model=32, n_heads=2, vocab_size=64)
    model = build_model(cfg, "cpu", torch.float64, "torch").eval()
    calls: list = []
    built = []
    monkeypatch.setattr(model, "decode_fn", lambda compile=False, orig=model.decode_fn: (
        built.append(1) or _counting_compiled_step(model, calls)) if compile else orig())
    prompt = torch.randint(0, 64, (2, 12))
    model.compile_decode_after = 2
    tokens = torch.randint(0, 64, (2, 6))
    _, cache = model.prefill(prompt)
    steps = [model.decode_step(tokens[:, t], cache) for t in range(6)]
    want = model(torch.cat([prompt, tokens], 1))[:, 12:]
    torch.testing.assert_close(torch.stack(steps, 1), want)
    assert calls == [14, 15, 16, 17] and built == [1]  # steps 3..6 compiled, built once

    calls.clear()
    model.compile_decode_after = None
    model.decode_step(tokens[:, 0], cache)
    model.compile_decode_after = 0
    monkeypatch.setenv("HARNESS_COMPILE_DECODE", "0")
    model.decode_step(tokens[:, 0], cache)
    assert calls == []

    monkeypatch.delenv("HARNESS_COMPILE_DECODE")
    model._compiled_decode = None
    monkeypatch.setattr(model, "decode_fn", lambda compile=False, orig=model.decode_fn: (
        _counting_compiled_step(model, calls, fail=True) if compile else orig()))
    _, cache = model.prefill(prompt)
    with pytest.warns(RuntimeWarning, match="compiled decode failed"):
        got = model.decode_step(tokens[:, 0], cache)
    got2 = model.decode_step(tokens[:, 1], cache)
    torch.testing.assert_close(torch.stack([got, got2], 1), want[:, :2])
    assert calls == [12] and cache.seen_tokens == 14  # the failed call left the cache as it was


@pytest.mark.parametrize("block", ["standard", "mamba", "rwkv"])
@pytest.mark.parametrize("variant", ["gated_deltanet", "mamba2", "rwkv7"])
def test_blocks_prefill_decode_and_cache_bytes(block, variant):
    """Every block style (harness.model.blocks) with attention at the bottom: chunk == recurrent,
    prefill + decode == forward, the cache holds what the blocks declare (RWKV's channel-mix
    tail included), and RWKV-7's first layer hands v_first to the later ones."""
    torch.manual_seed(0)
    cfg = ModelConfig(variant=variant, layout="1:1", placement="bottom", n_layers=4, d_model=32, n_heads=2,
                      vocab_size=50, block=block)
    model = HybridLM(cfg).double().eval()
    assert model.kinds == ["A", "A", "L", "L"]
    assert hasattr(model.layers[0], "pre_norm") == (block == "rwkv")
    assert hasattr(model.layers[0], "mlp") == (block != "mamba")
    x = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        full = model(x)
        torch.testing.assert_close(model(x, mode="recurrent"), full)
        _, cache = model.prefill(x[:, :8])
        steps = torch.stack([model.decode_step(x[:, t], cache) for t in range(8, 20)], 1)
    torch.testing.assert_close(steps, full[:, 8:])
    assert cache.nbytes() == model.expected_cache_bytes(2, 20, torch.float64)
    assert ("ffn_shift" in cache.states[0]) == (block == "rwkv")


def test_rwkv7_later_layers_read_the_first_layers_values():
    torch.manual_seed(0)
    model = HybridLM(ModelConfig(variant="rwkv7", n_layers=3, d_model=32, n_heads=2, vocab_size=50)).eval()
    assert not hasattr(model.layers[0].mixer, "v_lora") and hasattr(model.layers[1].mixer, "v_lora")
    seen = []
    hook = lambda mod, args, kwargs, out: seen.append(kwargs["context"].get("v_first"))  # noqa: E731
    handles = [b.mixer.register_forward_hook(hook, with_kwargs=True) for b in model.layers]
    with torch.no_grad():
        model(torch.randint(0, 50, (1, 6)))
    for h in handles:
        h.remove()
    assert seen[0] is not None and all(s is seen[0] for s in seen)  # one tensor, set by layer 0
