"""One shape for every variant (issue 22): one `forward` signature with the context, custom
initialisation without meta guards (initial values where a parameter is declared, and the
`init_parameters` hook), metadata one attribute per line, projections as plain modules.

The initial values must not move in the RNG stream (a model built from a seed keeps its exact
parameters, so stored cells and their tables stay valid): the references below re-enact fla's
construction order draw by draw, with plain torch modules, and must match bit for bit."""
import ast
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.model.config import ModelConfig
from harness.model.lm import HybridLM
from harness.model.modules import ShortConv, init_dt_bias
from harness.registry import VARIANTS, get_variant

VARIANTS_DIR = Path(__file__).resolve().parents[1] / "variants"
D, H = 32, 2


def _linear(d_in, d_out, bias=False):
    return nn.Linear(d_in, d_out, bias=bias).state_dict()


def _conv(dim, bias=False):
    return ShortConv(dim, 4, bias=bias).state_dict()


def _prefixed(prefix, sd):
    return {f"{prefix}.{k}": v for k, v in sd.items()}


def _gated_deltanet_reference():
    """fla's GatedDeltaNet draws: q, k, v, a, b, A_log, dt_bias, the three convs, g_proj, o_proj."""
    ref = {}
    for name, d_out in (("q_proj", D), ("k_proj", D), ("v_proj", 2 * D), ("a_proj", H), ("b_proj", H)):
        ref |= _prefixed(name, _linear(D, d_out))
    ref["A_log"] = torch.empty(H).uniform_(0, 16).log()
    ref["dt_bias"] = init_dt_bias(H)
    for name, dim in (("q", D), ("k", D), ("v", 2 * D)):
        ref |= _prefixed(f"{name}_conv1d", _conv(dim))
    ref |= _prefixed("g_proj", _linear(D, 2 * D))
    ref["o_norm.weight"] = torch.ones(2 * D // H)
    return ref | _prefixed("o_proj", _linear(2 * D, D))


def _kda_reference():
    """fla's KimiDeltaAttention draws: q, k, v, the three convs, f_proj (low rank), b, A_log,
    dt_bias, g_proj (low rank, biased), o_proj."""
    head = D // H
    ref = {}
    for name in ("q_proj", "k_proj", "v_proj"):
        ref |= _prefixed(name, _linear(D, D))
    for name in ("q", "k", "v"):
        ref |= _prefixed(f"{name}_conv1d", _conv(D))
    ref |= _prefixed("f_proj.0", _linear(D, head)) | _prefixed("f_proj.1", _linear(head, D))
    ref |= _prefixed("b_proj", _linear(D, H))
    ref["A_log"] = torch.empty(H).uniform_(1, 16).log()
    ref["dt_bias"] = init_dt_bias(D)
    ref |= _prefixed("g_proj.0", _linear(D, head)) | _prefixed("g_proj.1", _linear(head, D, bias=True))
    ref["o_norm.weight"] = torch.ones(head)
    return ref | _prefixed("o_proj", _linear(D, D))


def _mamba2_reference():
    """fla's (mamba_ssm's) Mamba2 draws: in_proj, the conv (biased), dt_bias, A_log; D and the
    norm are ones; out_proj."""
    inner, state_size = 2 * D, 64
    conv_dim = inner + 2 * state_size
    ref = _prefixed("in_proj", _linear(D, inner + conv_dim + H)) | _prefixed("xbc_conv1d", _conv(conv_dim, True))
    ref["dt_bias"] = init_dt_bias(H)
    ref["A_log"] = torch.empty(H).uniform_(1, 16).log()
    ref["D"] = torch.ones(H)
    ref["norm.weight"] = torch.ones(inner)
    return ref | _prefixed("out_proj", _linear(inner, D))


@pytest.mark.parametrize("name, reference", [("gated_deltanet", _gated_deltanet_reference),
                                             ("kda", _kda_reference), ("mamba2", _mamba2_reference)])
def test_declared_initial_values_keep_flas_draw_order(name, reference):
    torch.manual_seed(0)
    want = reference()
    after_reference = torch.get_rng_state()
    torch.manual_seed(0)
    got = get_variant(name)(D, H).state_dict()
    assert torch.equal(torch.get_rng_state(), after_reference), f"{name} draws more or less than fla's construction"
    assert sorted(got) == sorted(want), f"{name}: parameter names differ from the reference"
    for key in want:
        assert torch.equal(got[key], want[key]), f"{name}: {key} is not what fla's draw order gives"


def test_rwkv7_hook_applies_flas_init_with_the_models_depth_after_its_linear_init():
    torch.manual_seed(0)
    L = 4
    model = HybridLM(ModelConfig(variant="rwkv7", n_layers=L, d_model=D, n_heads=H, vocab_size=61))
    C = D
    ddd = (torch.arange(C, dtype=torch.float64) / C).view(1, 1, C)
    for i, block in enumerate(model.layers):
        mixer = block.mixer
        # fla's formulas, written out: the depth is the model's, not layer_idx + 1
        assert torch.equal(mixer.g_norm.weight, torch.full((C,), ((i + 1) / L) ** 0.7, dtype=torch.float32))
        assert torch.equal(mixer.x_r, (1.0 - ddd ** (0.2 * (1.0 - i / L))).float())
        fresh = get_variant("rwkv7")(D, H, layer_idx=i)
        with torch.no_grad():
            fresh.init_parameters(L)
        for key in ("w_lora.lora.2.bias", "a_lora.lora.2.bias", "k_k", "k_a", "r_k"):  # the Linear init zeroed biases
            assert torch.equal(mixer.get_parameter(key), fresh.get_parameter(key)), f"layer {i}: {key}"
            assert mixer.get_parameter(key).abs().sum() > 0


@pytest.mark.parametrize("name", VARIANTS.names())
def test_a_model_builds_on_meta_without_touching_the_rng(name):
    layout = "pure" if name == "attention" else "3:1"
    cfg = ModelConfig(variant=name, layout=layout, n_layers=4, d_model=D, n_heads=H, vocab_size=61)
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    with torch.device("meta"):
        meta = HybridLM(cfg)
    assert torch.equal(rng, torch.get_rng_state())
    real = HybridLM(cfg)
    assert [(k, p.shape) for k, p in meta.named_parameters()] == [(k, p.shape) for k, p in real.named_parameters()]


@pytest.mark.parametrize("name", VARIANTS.names())
def test_evaluation_computes_what_training_computes_bit_for_bit(name):
    """Projections are plain modules on every path: no separate no-grad (fused) computation."""
    layout = "pure" if name == "attention" else "3:1"
    torch.manual_seed(0)
    model = HybridLM(ModelConfig(variant=name, layout=layout, n_layers=4, d_model=D, n_heads=H, vocab_size=61))
    x = torch.randint(0, 61, (2, 24))
    trained = model(x)
    with torch.no_grad():
        assert torch.equal(model(x), trained.detach())


@pytest.mark.parametrize("name", VARIANTS.names())
def test_forward_has_one_signature(name):
    params = list(inspect.signature(get_variant(name).forward).parameters)
    assert params == ["self", "x", "state", "offset", "mode", "context"], f"{name}.forward{params}"


def _variant_sources():
    return sorted(p for p in VARIANTS_DIR.glob("[!_]*.py"))


@pytest.mark.parametrize("path", _variant_sources(), ids=lambda p: p.stem)
def test_variant_source_has_the_one_shape(path):
    """Metadata one attribute per line; no meta-device guard; no fused-projection helper."""
    text = path.read_text()
    assert '"meta"' not in text and "'meta'" not in text, f"{path.name}: a meta-device guard"
    assert "fused_linear" not in text and "post_init" not in text, path.name
    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign):
                    assert not any(isinstance(t, ast.Tuple) for t in stmt.targets), (
                        f"{path.name}:{stmt.lineno}: class attributes packed into a tuple")
