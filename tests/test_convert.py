"""fla checkpoint conversion (harness.integrations.convert).

Two layers of tests:

- Without fla: config mapping (paper-sized configs, hybrids, MLP sizes, refusals) and a
  round trip ours -> fla-named checkpoint on disk -> `load_fla_checkpoint` -> identical logits.
- With fla installed (`pip install fla-core==0.6.0 flash-linear-attention==0.6.0 triton==3.8.0`):
  tiny fla models built by `AutoModelForCausalLM.from_config`, saved with `save_pretrained`,
  converted, and our logits held to fla's own forward on the same weights. No fla kernel runs on a
  plain CPU, so that forward runs under Triton's interpreter (TRITON_INTERPRET=1, fp32, tiny
  shapes) with two test-only patches (shared/fla-notes.md §2):
    1. autotuning pruned to the first config (the autotuner would ask the absent GPU driver for a
       benchmarker);
    2. `range` inside an interpreted kernel yields interpreter tensors (kernels call `.to()` on
       their loop counters, which the interpreter leaves as Python ints).
  fla's softmax `Attention` needs flash-attn; for the hybrid and the Transformer,
  `fla.layers.attn.flash_attn_func` is replaced by an SDPA stand-in. The interpreter must be
  switched on before triton is imported, so all fla work runs in one subprocess
  (`python tests/test_convert.py --worker OUT`), whose JSON results the tests below read.

  Kernel paths exercised: at T <= 64 under no_grad fla picks `fused_recurrent` for GDN, GLA,
  DeltaNet, RetNet and HGRN-2 (DeltaNet's chunk kernel refuses fp32 anyway); the GDN case is also
  run with grad enabled, which forces fla's `chunk` kernel. HGRN's Triton path fails inside the
  interpreter ("mask has unsupported dtype"), so for HGRN fla's op is swapped for fla's own naive
  reference (`naive_recurrent_hgrn`): the layer's parameterisation is still fla's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from harness.integrations.convert import (
    ConversionError,
    checkpoint_model_dict,
    convert_state_dict,
    fla_config_to_model_config,
    is_fla_checkpoint,
    load_fla_checkpoint,
)
from harness.model.config import ModelConfig
from harness.model.lm import HybridLM

REPO = Path(__file__).resolve().parent.parent
TOL = 2e-4  # fp32; observed max abs diffs are ~1e-6 (logits of size ~0.1-1)


# ---------------------------------------------------------------------------------------------
# Config mapping (no fla needed)


def _gdn_340m(**over):
    # the shape of m-a-p/340M-20B-GatedDeltaNet-* (paper-notes §2.3), hybrid every 4th layer
    cfg = {
        "model_type": "gated_deltanet", "hidden_size": 1024, "num_hidden_layers": 24, "num_heads": 4,
        "head_dim": 256, "expand_v": 1.0, "hidden_ratio": 4, "intermediate_size": None, "vocab_size": 32000,
        "norm_eps": 1e-6, "tie_word_embeddings": False, "use_gate": True, "use_short_conv": True, "conv_size": 4,
        "attn": {"layers": [3, 7, 11, 15, 19, 23], "num_heads": 16, "num_kv_heads": 8, "qkv_bias": False,
                 "window_size": None, "rope_theta": 10000.0},
    }
    cfg.update(over)
    return cfg


def test_config_gdn_hybrid_paper_shape():
    mc = fla_config_to_model_config(_gdn_340m())
    assert (mc.variant, mc.layout, mc.n_layers, mc.d_model, mc.n_heads) == ("gated_deltanet", "3:1", 24, 1024, 4)
    assert mc.mlp_hidden == 2816  # fla: round_up(int(1024 * 4 * 2/3), 256)
    assert (mc.attn_heads, mc.attn_kv_heads, mc.rope_theta) == (16, 8, 10000.0)
    assert mc.mixer_kwargs["head_dim"] == 256 and mc.mixer_kwargs["expand_v"] == 1.0
    assert mc.norm_eps == mc.mixer_kwargs["norm_eps"] == 1e-6
    # an irregular placement becomes the ratio placed at those indices; none at all is "pure"
    mc = fla_config_to_model_config(_gdn_340m(attn={"layers": [5, 17], "num_heads": 16}))
    assert (mc.layout, mc.placement) == ("11:1", "attn:5,17")
    mc = fla_config_to_model_config(_gdn_340m(attn={"layers": [5, 17, 20, 21, 22], "num_heads": 16}))
    assert mc.layout == "".join("A" if i in (5, 17, 20, 21, 22) else "L" for i in range(24))  # 5 of 24: no ratio
    assert fla_config_to_model_config(_gdn_340m(attn=None)).layout == "pure"


@pytest.mark.parametrize("inter", [2816, 2730, 1000, 5632, 4097])
def test_config_intermediate_size(inter):
    mc = fla_config_to_model_config(_gdn_340m(intermediate_size=inter))
    assert mc.mlp_hidden == inter


@pytest.mark.parametrize(
    "cfg, variant, heads",
    [
        ({"model_type": "gla", "hidden_size": 64, "num_heads": 4}, "gla", 4),
        ({"model_type": "delta_net", "hidden_size": 64, "num_heads": 4}, "deltanet", 4),
        ({"model_type": "retnet", "hidden_size": 64, "num_heads": 4}, "retnet", 4),
        ({"model_type": "hgrn", "hidden_size": 64}, "hgrn", 1),
        ({"model_type": "hgrn2", "hidden_size": 64, "expand_ratio": 16}, "hgrn2", 4),
        ({"model_type": "hgrn2", "hidden_size": 64, "expand_ratio": None, "num_heads": 2}, "hgrn2", 2),
        ({"model_type": "transformer", "hidden_size": 64, "num_heads": 4, "num_kv_heads": 2}, "attention", 4),
        ({"model_type": "kda", "hidden_size": 64, "num_heads": 4, "head_dim": 16}, "kda", 4),
        ({"model_type": "mamba2", "hidden_size": 64, "head_dim": 16, "state_size": 16, "expand": 2,
          "hidden_act": "silu"}, "mamba2", 8),
        ({"model_type": "rwkv7", "hidden_size": 64, "head_dim": 16, "hidden_act": "sqrelu"}, "rwkv7", 4),
    ],
)
def test_config_model_types(cfg, variant, heads):
    mc = fla_config_to_model_config({"num_hidden_layers": 2, "vocab_size": 300, **cfg})
    assert mc.variant == variant and mc.n_heads == heads
    assert mc.block == {"mamba2": "mamba", "rwkv7": "rwkv"}.get(variant, "standard")
    if variant == "rwkv7":
        assert mc.mlp_hidden == 256  # fla's RWKV7FeedForward: 4 * 64 rounded up to a multiple of 32
    if variant == "attention":
        assert mc.layout == "transformer" and mc.attn_kv_heads == 2
    HybridLM(mc)  # buildable


@pytest.mark.parametrize(
    "over, match",
    [
        ({"model_type": "rwkv6"}, "not convertible"),
        ({"num_v_heads": 8}, "GVA"),
        ({"attn": [{"layers": [1], "num_heads": 16, "window_size": 512}, {"layers": [3], "num_heads": 16}]},
         "different sliding windows"),
        ({"attn": [{"layers": [1], "num_heads": 16, "window_size": 512},
                   {"layers": [3], "num_heads": 16, "window_size": 256}]}, "different sliding windows"),
        ({"attn": {"layers": [1], "num_heads": 16, "window_size": 0}}, "window_size must be a positive"),
        ({"attn": [{"layers": [1], "num_heads": 16}, {"layers": [3], "num_heads": 8}]}, "differ"),
        ({"attn": {"layers": [24], "num_heads": 16}}, "invalid"),
        ({"hidden_act": "gelu"}, "SwiGLU"),
        ({"attnres_block_size": 4}, "attnres"),
        ({"model_type": "kda", "num_v_heads": 8}, "GVA"),
        ({"model_type": "mamba2", "norm_before_gate": True}, "norm_before_gate"),
        ({"model_type": "mamba2", "head_dim": 48}, "does not divide"),
        ({"model_type": "rwkv7", "norm_first": False}, "norm_first"),
        ({"model_type": "rwkv7", "value_dim": [1024, 2048] * 12}, "differs between layers"),
    ],
)
def test_config_refusals(over, match):
    with pytest.raises(ConversionError, match=match):
        fla_config_to_model_config(_gdn_340m(**over))


def test_config_hybrid_with_one_window_converts_to_model_window():
    """fla's per-spec `window_size`, the same for every attention layer (in one spec or several),
    becomes ModelConfig.window; the model builds and its attention layers use it."""
    small = dict(hidden_size=32, num_hidden_layers=4, num_heads=2, head_dim=16, vocab_size=64)
    for attn in ({"layers": [1, 3], "num_heads": 4, "num_kv_heads": 2, "window_size": 16},
                 [{"layers": [1], "num_heads": 4, "num_kv_heads": 2, "window_size": 16},
                  {"layers": [3], "num_heads": 4, "num_kv_heads": 2, "window_size": 16}]):
        mc = fla_config_to_model_config(_gdn_340m(**small, attn=attn))
        assert (mc.layout, mc.window, mc.attn_heads) == ("1:1", 16, 4)
        model = HybridLM(mc)
        windows = {getattr(layer.mixer, "window", "linear") for layer in model.layers}
        assert windows == {16, "linear"}
    full = fla_config_to_model_config(_gdn_340m(**small, attn={"layers": [1, 3], "num_heads": 4, "window_size": None}))
    assert full.window is None


# ---------------------------------------------------------------------------------------------
# Round trip on disk without fla: ours -> fla names -> load_fla_checkpoint


def _to_fla_names(model: HybridLM) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            if not model.cfg.tie_embeddings:
                out[k] = v
            continue
        out["model." + k.replace(".mixer.", ".attn.")] = v.clone()
    return out


def _fla_config_for(mc: ModelConfig, attn_layers: list[int]) -> dict:
    mk = mc.mixer_kwargs
    return {
        "model_type": "gated_deltanet", "hidden_size": mc.d_model, "num_hidden_layers": mc.n_layers,
        "num_heads": mc.n_heads, "head_dim": mk["head_dim"], "expand_v": mk["expand_v"], "hidden_ratio": 4,
        "intermediate_size": mc.mlp_hidden, "vocab_size": mc.vocab_size, "norm_eps": mc.norm_eps,
        "tie_word_embeddings": mc.tie_embeddings, "conv_size": 4,
        "attn": {"layers": attn_layers, "num_heads": mc.attn_heads, "num_kv_heads": mc.attn_kv_heads,
                 "rope_theta": mc.rope_theta},
    }


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_fla_layout_on_disk(tmp_path, tie):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    mc = ModelConfig(variant="gated_deltanet", layout="attn:1", n_layers=2, d_model=32, n_heads=2, vocab_size=64,
                     attn_heads=4, attn_kv_heads=2, mlp_ratio=2, mlp_multiple=8, norm_eps=1e-6, tie_embeddings=tie,
                     mixer_kwargs={"head_dim": 16, "expand_v": 2.0, "norm_eps": 1e-6})
    ours = HybridLM(mc).eval()
    (tmp_path / "config.json").write_text(json.dumps(_fla_config_for(mc, [1])))
    save_file(_to_fla_names(ours), str(tmp_path / "model.safetensors"))
    assert is_fla_checkpoint(tmp_path)
    assert checkpoint_model_dict(tmp_path)["layout"] == "1:1"
    back = load_fla_checkpoint(tmp_path)
    assert back.conversion.exact and back.cfg.layout == "1:1" and back.cfg.tie_embeddings == tie
    x = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert torch.equal(ours(x), back(x))


def test_legacy_fused_mlp_and_unknown_keys():
    torch.manual_seed(0)
    mc = ModelConfig(variant="gated_deltanet", n_layers=1, d_model=32, n_heads=2, vocab_size=64, mlp_ratio=2,
                     mlp_multiple=8, mixer_kwargs={"head_dim": 16})
    ours = HybridLM(mc)
    fla = _to_fla_names(ours)
    # older fla fused gate and up projections into one [2H, D] matrix
    fla["model.layers.0.mlp.gate_proj.weight"] = torch.cat(
        [fla["model.layers.0.mlp.gate_proj.weight"], fla.pop("model.layers.0.mlp.up_proj.weight")])
    conv = convert_state_dict(fla, mc)
    for k, v in ours.state_dict().items():
        assert torch.equal(conv[k], v), k
    with pytest.raises(ConversionError, match="unrecognised"):
        convert_state_dict({**fla, "model.extra_head.weight": torch.zeros(1)}, mc)


@pytest.mark.parametrize("tie", [False, True])
def test_llama_matches_transformers(tmp_path, tie):
    """A Hugging Face Llama (GQA, RoPE) converts to our softmax-attention HybridLM exactly."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=48, vocab_size=64, rope_theta=500.0, tie_word_embeddings=tie)
    ref = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.2)
    ref.save_pretrained(tmp_path)
    ours = load_fla_checkpoint(tmp_path)
    got = ours.cfg
    assert (got.variant, got.layout, got.attn_kv_heads, got.mlp_hidden) == ("attention", "transformer", 2, 48)
    x = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        want = ref(input_ids=x).logits
        assert (ours(x) - want).abs().max() < 1e-5
        # and token by token through our KV cache
        logits, cache = ours.prefill(x[:, :8])
        steps = [ours.decode_step(x[:, t], cache) for t in range(8, 16)]
        assert (torch.stack(steps, 1) - want[:, 8:16]).abs().max() < 1e-5


def test_missing_checkpoint_is_clear(tmp_path):
    pytest.importorskip("huggingface_hub")
    from harness.integrations.hub import hf_offline

    with hf_offline(), pytest.raises(ConversionError, match="offline"):  # the cache only, never the network
        load_fla_checkpoint("no-such-org/no-such-model-xyz")
    with pytest.raises(ConversionError, match="does not exist") as info:  # not "go online": it is a path
        load_fla_checkpoint(str(tmp_path / "nowhere"))
    assert "HARNESS_ONLINE" not in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="no config.json"):
        load_fla_checkpoint(str(tmp_path / "empty"))


# ---------------------------------------------------------------------------------------------
# Against fla's own forward (subprocess worker under the Triton interpreter)

T_TOKENS = 24
VOCAB = 64

#: name -> (config class, config kwargs, forward with grad enabled?)
CASES: dict[str, tuple[str, dict, bool]] = {
    "gated_deltanet": ("GatedDeltaNetConfig", dict(hidden_size=32, num_heads=2, head_dim=16), False),
    "gated_deltanet_chunk": ("GatedDeltaNetConfig", dict(hidden_size=32, num_heads=2, head_dim=16, expand_v=1.0), True),
    "gated_deltanet_hybrid": (
        "GatedDeltaNetConfig",
        dict(hidden_size=32, num_heads=2, head_dim=16, attn={"layers": [1], "num_heads": 4, "num_kv_heads": 2}),
        False,
    ),
    "gla": ("GLAConfig", dict(hidden_size=32, num_heads=2, intermediate_size=48, tie_word_embeddings=True), False),
    "delta_net": ("DeltaNetConfig", dict(hidden_size=32, num_heads=2), False),
    "retnet": ("RetNetConfig", dict(hidden_size=32, num_heads=2), False),
    "hgrn2": ("HGRN2Config", dict(hidden_size=32, num_heads=2, expand_ratio=None, use_lower_bound=False), False),
    "hgrn_naive_op": ("HGRNConfig", dict(hidden_size=32, use_lower_bound=False), False),
    "transformer": ("TransformerConfig", dict(hidden_size=32, num_heads=4, num_kv_heads=2, rope_theta=500.0), False),
    # the newer mixers: KDA (fused_recurrent_kda; with grad, chunk_kda), Mamba-2 (fla's torch path
    # with its Triton norms; one B/C group: see variants/mamba2.py) and RWKV-7 (without grad, the
    # exact fused_mul_recurrent_rwkv7: fla's chunk_rwkv7 runs with safe_gate=True, an approximate
    # path measured 5e-5 off in relative terms even in fp32)
    "kda": ("KDAConfig", dict(hidden_size=32, num_heads=2, head_dim=16), False),
    "kda_chunk": ("KDAConfig", dict(hidden_size=32, num_heads=2, head_dim=16, expand_v=2.0), True),
    "kda_hybrid": ("KDAConfig", dict(hidden_size=32, num_heads=2, head_dim=16,
                                     attn={"layers": [0], "num_heads": 4, "num_kv_heads": 2}), False),
    "mamba2": ("Mamba2Config", dict(hidden_size=32, head_dim=16, state_size=16, expand=2, n_groups=1), False),
    "rwkv7": ("RWKV7Config", dict(hidden_size=32, head_dim=16, decay_low_rank_dim=8, gate_low_rank_dim=16,
                                  a_low_rank_dim=8, v_low_rank_dim=4), False),
}


def _sdpa_flash_attn_func(q, k, v, causal=True, window_size=(-1, -1), **_):
    """Stand-in for flash_attn_func ([B, T, H, D] layout, GQA) using torch SDPA."""
    import torch.nn.functional as F

    assert window_size in ((-1, -1), None), "the stand-in has no sliding window"
    rep = q.shape[2] // k.shape[2]
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if rep > 1:
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2)


def _worker(out_path: str, work_dir: str) -> None:
    import fla_interpreter  # tests/ is sys.path[0] when this file runs as the worker script

    fla_interpreter.enable()  # TRITON_INTERPRET=1 and the two test-only patches
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    t0 = time.time()
    import fla  # noqa: F401  (registers the configs with transformers' Auto classes)
    import fla.layers.attn as fla_attn
    import fla.layers.hgrn as fla_hgrn
    import fla.models as fla_models
    from fla.ops.hgrn.naive import naive_recurrent_hgrn
    from transformers import AutoModelForCausalLM

    fla_attn.flash_attn_func = _sdpa_flash_attn_func

    def naive_hgrn(x, g, initial_state=None, output_final_state=False, cu_seqlens=None):
        assert cu_seqlens is None
        return naive_recurrent_hgrn(x, g, initial_state, output_final_state)

    fla_hgrn.fused_recurrent_hgrn = naive_hgrn
    fla_hgrn.chunk_hgrn = naive_hgrn
    results: dict = {"_import_s": time.time() - t0}
    only = os.environ.get("HARNESS_CONVERT_CASES")
    for name, (cls_name, kwargs, with_grad) in CASES.items():
        if only and name not in only.split(","):
            continue
        t1 = time.time()
        try:
            torch.manual_seed(0)
            cfg = getattr(fla_models, cls_name)(num_hidden_layers=2, vocab_size=VOCAB, fuse_cross_entropy=False,
                                                **kwargs)
            ref = AutoModelForCausalLM.from_config(cfg).eval()
            with torch.no_grad():  # fla inits norms to ones and some weights to zeros (RWKV-7's o_proj,
                for pname, p in ref.named_parameters():  # biases): randomise them so a swapped one shows
                    if pname.endswith("norm.weight") or pname.endswith("gate.weight") or not p.any():
                        p.add_(torch.randn_like(p) * 0.2)
            ckpt = Path(work_dir) / name
            ref.save_pretrained(ckpt)
            x = torch.randint(0, VOCAB, (2, T_TOKENS), generator=torch.Generator().manual_seed(1))
            with torch.set_grad_enabled(with_grad):
                want = ref(input_ids=x).logits.detach().float()
            ours = load_fla_checkpoint(ckpt)
            with torch.no_grad():
                got = {mode: ours(x, mode=mode).float() for mode in ("chunk", "recurrent")}
            results[name] = {
                "max_abs_diff": {m: float((g - want).abs().max()) for m, g in got.items()},
                "logit_abs_max": float(want.abs().max()),
                "variant": ours.cfg.variant,
                "layout": ours.cfg.layout,
                "placement": ours.cfg.placement,
                "block": ours.cfg.block,
                "exact": ours.conversion.exact,
                "fla_keys": len(ref.state_dict()),
                "seconds": time.time() - t1,
            }
        except Exception as exc:  # reported per case
            import traceback

            results[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
    # an approximate conversion (HGRN-2 with fla's default forget-gate lower bounds): flagged
    try:
        cfg = fla_models.HGRN2Config(num_hidden_layers=2, vocab_size=VOCAB, hidden_size=32, num_heads=2,
                                     expand_ratio=None, fuse_cross_entropy=False)
        ckpt = Path(work_dir) / "hgrn2_lower_bound"
        AutoModelForCausalLM.from_config(cfg).save_pretrained(ckpt)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = load_fla_checkpoint(ckpt)
        strict_error = ""
        try:
            load_fla_checkpoint(ckpt, strict=True)
        except ConversionError as exc:
            strict_error = str(exc)
        results["hgrn2_lower_bound"] = {"exact": m.conversion.exact,
                                        "warned": any("lower bound" in str(w.message) for w in caught),
                                        "strict_error": strict_error}
    except Exception as exc:
        results["hgrn2_lower_bound"] = {"error": f"{type(exc).__name__}: {exc}"}
    Path(out_path).write_text(json.dumps(results, indent=1))


@pytest.fixture(scope="module")
def fla_results(tmp_path_factory):
    import importlib.util

    # find_spec, not import: importing triton here (without the interpreter) would pin it off
    for mod, pip in (("fla", "fla-core==0.6.0 flash-linear-attention==0.6.0"), ("triton", "triton==3.8.0"),
                     ("transformers", "transformers")):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} not installed (pip install {pip})")
    work = tmp_path_factory.mktemp("fla_ckpts")
    out = work / "results.json"
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(out), str(work)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"fla worker failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_fla(fla_results, case):
    r = fla_results[case]
    assert "error" not in r, r.get("trace", r.get("error"))
    assert r["exact"]
    assert r["logit_abs_max"] > 1e-3  # a non-trivial model
    for mode, diff in r["max_abs_diff"].items():
        assert diff < TOL, f"{case} ({mode}): max |ours - fla| = {diff:.3g}"
    if case == "gated_deltanet_hybrid":
        assert (r["variant"], r["layout"]) == ("gated_deltanet", "1:1")
    if case == "transformer":
        assert (r["variant"], r["layout"]) == ("attention", "transformer")
    if case == "kda_hybrid":  # attention at layer 0 of 2: 1:1 with the attention layer at the bottom
        assert (r["variant"], r["layout"], r["placement"]) == ("kda", "1:1", "bottom")
    if case in ("mamba2", "rwkv7"):
        assert r["block"] == {"mamba2": "mamba", "rwkv7": "rwkv"}[case]


@pytest.mark.slow
def test_lower_bound_conversion_is_flagged(fla_results):
    r = fla_results["hgrn2_lower_bound"]
    assert "error" not in r, r
    assert r["exact"] is False and r["warned"] and "not exact" in r["strict_error"]


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    sys.path.insert(0, str(REPO))
    _worker(sys.argv[2], sys.argv[3])
