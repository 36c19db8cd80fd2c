"""Load flash-linear-attention (fla) / Hugging Face checkpoints into our HybridLM.

The paper's released models (e.g. ``m-a-p/340M-20B-GatedDeltaNet-hybrid-3-1``) are fla
``*ForCausalLM`` checkpoints: a ``config.json`` with an fla ``model_type`` and the weights in
safetensors (or a torch ``.bin``). Our variants follow fla's parameterisation and parameter names,
so converting is reading the config into a `ModelConfig` and renaming state-dict keys:

=====================================  ==========================================
fla                                    ours (HybridLM)
=====================================  ==========================================
``model.embeddings.weight``            ``embeddings.weight``
``model.layers.{i}.attn_norm.weight``  ``layers.{i}.attn_norm.weight``
``model.layers.{i}.attn.*``            ``layers.{i}.mixer.*`` (same names inside)
``model.layers.{i}.mlp_norm.weight``   ``layers.{i}.mlp_norm.weight``
``model.layers.{i}.mlp.{gate,up,down}_proj.weight``  same under ``layers.{i}.mlp``
``model.norm.weight``                  ``norm.weight``
``lm_head.weight``                     ``lm_head.weight`` (absent when tied)
=====================================  ==========================================

Which layers are softmax attention comes from fla's ``attn.layers`` (0-based) and becomes our
layout (``layout_name`` of the ``attn:i,j`` pattern, e.g. ``"3:1"`` when it is the paper's regular
block, else an explicit ``LLAL...`` pattern), so converted models land in the same
variant/layout columns as ours. fla's softmax layer needs flash-attn; ours is SDPA, so the
converted model runs anywhere torch does, CPU included.

Exact for gated_deltanet, gla, delta_net, retnet, hgrn2 (without lower bounds), transformer and
hybrid attention layers (tests/test_convert.py holds our logits to fla's own forward), and for
Hugging Face ``llama`` checkpoints (the usual Transformer-baseline format; held to transformers'
LlamaForCausalLM). HGRN / HGRN-2 checkpoints trained
with fla's ``use_lower_bound=True`` (the default) convert *approximately*: our mixers have no
model-level forget-gate lower bound, so ``model.lower_bounds`` is dropped with a warning (see
`ConvertedInfo.exact`). Options we do not implement (GQA inside GLA/RetNet, feature maps, sliding
windows, qk-norm, GVA in GDN, ...) raise `ConversionError` instead of converting wrongly.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from harness.integrations.hub import ConversionError, resolve_checkpoint_dir
from harness.model.config import ModelConfig
from harness.model.layout import layout_name, resolve_layout

__all__ = [
    "ConversionError",
    "ConvertedInfo",
    "FLA_MODEL_TYPES",
    "is_fla_checkpoint",
    "read_fla_config",
    "fla_config_to_model_config",
    "convert_state_dict",
    "normalise_keys",
    "load_fla_state_dict",
    "load_fla_checkpoint",
    "checkpoint_model_dict",
]

#: fla model_type -> our variant name
FLA_MODEL_TYPES: dict[str, str] = {
    "gated_deltanet": "gated_deltanet",
    "gla": "gla",
    "delta_net": "deltanet",
    "retnet": "retnet",
    "hgrn": "hgrn",
    "hgrn2": "hgrn2",
    "transformer": "attention",
    "llama": "attention",  # a Hugging Face Llama (the usual Transformer baseline format)
}


@dataclass
class ConvertedInfo:
    """What a conversion did: the source, whether it is exact, and any notes."""

    source: str
    model_type: str
    exact: bool = True
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading the checkpoint (finding it: harness.integrations.hub)


def read_fla_config(path_or_hub_id: Union[str, os.PathLike]) -> tuple[Path, dict[str, Any]]:
    """(checkpoint directory, its config.json as a dict)."""
    directory = resolve_checkpoint_dir(path_or_hub_id)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise ConversionError(f"{directory} has no config.json")
    return directory, json.loads(cfg_path.read_text())


def is_fla_checkpoint(directory: Union[str, os.PathLike]) -> bool:
    """True for a local directory whose config.json has an fla model_type we convert."""
    cfg_path = Path(directory) / "config.json"
    if not cfg_path.is_file():
        return False
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "harness_config" not in cfg and cfg.get("model_type") in FLA_MODEL_TYPES


# ---------------------------------------------------------------------------------------------
# Config


def _attn_specs(config: Mapping[str, Any], n_layers: int) -> tuple[list[int], Optional[dict[str, Any]]]:
    """fla's `attn` field -> (attention layer indices, the one shared spec)."""
    attn = config.get("attn")
    if not attn:
        return [], None
    specs = attn if isinstance(attn, list) else [attn]
    layers: list[int] = []
    shared: Optional[dict[str, Any]] = None
    for spec in specs:
        if not isinstance(spec, Mapping) or "layers" not in spec or "num_heads" not in spec:
            raise ConversionError(f"attn spec {spec!r}: expected a mapping with 'layers' and 'num_heads'")
        norm = {
            "num_heads": int(spec["num_heads"]),
            "num_kv_heads": int(spec.get("num_kv_heads") or spec["num_heads"]),
            "qkv_bias": bool(spec.get("qkv_bias", False)),
            "window_size": spec.get("window_size"),
            "rope_theta": float(spec.get("rope_theta") if spec.get("rope_theta") is not None else 10000.0),
        }
        if norm["window_size"] is not None:
            raise ConversionError(
                f"attn spec {dict(spec)}: sliding-window attention (window_size={norm['window_size']}) "
                "is not implemented by our attention mixer"
            )
        if spec.get("qk_norm"):
            raise ConversionError(f"attn spec {dict(spec)}: qk_norm is not implemented by our attention mixer")
        if shared is not None and norm != shared:
            raise ConversionError(
                f"attention specs differ between layers ({shared} vs {norm}); a ModelConfig has one attention spec"
            )
        shared = norm
        layers += [int(i) for i in spec["layers"]]
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad or len(set(layers)) != len(layers):
        raise ConversionError(f"attn.layers {layers} are invalid for num_hidden_layers={n_layers}")
    return sorted(layers), shared


def _mlp_fields(config: Mapping[str, Any], d: int) -> dict[str, Any]:
    """fla's GatedMLP size -> (mlp_ratio, mlp_multiple) giving the same hidden size."""
    act = config.get("hidden_act", "swish")
    if act not in ("swish", "silu"):
        raise ConversionError(f"hidden_act={act!r}: our MLP is SwiGLU (swish) only")
    inter = config.get("intermediate_size")
    if inter is None:
        ratio = config.get("hidden_ratio") or 4  # fla: None means 4
        return {"mlp_ratio": float(ratio), "mlp_multiple": 256}  # fla rounds up to a multiple of 256
    inter = int(inter)
    # ModelConfig: hidden = round_up(int(d * ratio * 2/3), multiple). Aim at inter + 0.5 so float
    # rounding can never land on inter - 1; multiple 1 keeps it.
    ratio = (inter + 0.5) * 1.5 / d
    out = {"mlp_ratio": ratio, "mlp_multiple": 1}
    if ModelConfig(d_model=d, **out).mlp_hidden != inter:  # pragma: no cover - arithmetic guard
        raise ConversionError(f"intermediate_size={inter} cannot be expressed with mlp_ratio/mlp_multiple")
    return out


def _require(config: Mapping[str, Any], key: str, ok: Any, default: Any, why: str) -> None:
    value = config.get(key, default)
    allowed = ok if isinstance(ok, (list, tuple, set)) else [ok]
    if value not in allowed:
        raise ConversionError(f"{config.get('model_type')}: {key}={value!r} is not supported ({why})")


def fla_config_to_model_config(config: Mapping[str, Any]) -> ModelConfig:
    """An fla config.json (as a dict) -> the equivalent ModelConfig.

    Raises ConversionError for a model type or option our variants do not implement.
    """
    mtype = config.get("model_type")
    if mtype not in FLA_MODEL_TYPES:
        raise ConversionError(
            f"model_type {mtype!r} is not convertible; supported: {', '.join(sorted(FLA_MODEL_TYPES))}"
        )
    variant = FLA_MODEL_TYPES[mtype]
    if config.get("attnres_block_size") is not None:
        raise ConversionError(f"{mtype}: attnres_block_size (attention residuals) is not implemented")
    n_layers = int(config["num_hidden_layers"])
    d = int(config["hidden_size"])
    eps = float(config.get("norm_eps", 1e-6))
    if config.get("elementwise_affine") is False:
        pass  # norm weights are absent; convert_state_dict fills ones
    fields: dict[str, Any] = {
        "variant": variant,
        "n_layers": n_layers,
        "d_model": d,
        "vocab_size": int(config["vocab_size"]),
        "norm_eps": eps,
        "tie_embeddings": bool(config.get("tie_word_embeddings", False)),
        **_mlp_fields(config, d),
    }
    mk: dict[str, Any] = {}

    if mtype == "llama":
        if config.get("attention_bias") or config.get("mlp_bias"):
            raise ConversionError("llama: attention_bias / mlp_bias are not implemented (our o_proj and MLP have no bias)")
        rope = config.get("rope_parameters") or {}
        scaling = config.get("rope_scaling") or {}
        rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
        if rope_type != "default":
            raise ConversionError(f"llama: rope scaling {rope_type!r} is not implemented")
        heads = int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or d // heads)
        fields.update(
            layout="transformer", n_heads=heads, attn_heads=heads,
            attn_kv_heads=int(config.get("num_key_value_heads") or heads),
            rope_theta=float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0),
            norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        )
        if head_dim * heads != d:
            fields["attn_kwargs"] = {"head_dim": head_dim}
        return ModelConfig(**fields)

    if mtype == "transformer":
        for key, why in (("qk_norm", "no qk-norm in our attention"),):
            _require(config, key, [False, None], False, why)
        if config.get("window_size") is not None:
            raise ConversionError("transformer: sliding-window attention is not implemented")
        heads = int(config.get("num_heads", 32))
        fields.update(
            layout="transformer", n_heads=heads, attn_heads=heads,
            attn_kv_heads=int(config.get("num_kv_heads") or heads),
            rope_theta=float(config.get("rope_theta") or 10000.0),
        )
        if config.get("qkv_bias"):
            fields["attn_kwargs"] = {"qkv_bias": True}
        return ModelConfig(**fields)

    if mtype == "gated_deltanet":
        heads = int(config.get("num_heads", 6))
        if config.get("num_v_heads") not in (None, heads):
            raise ConversionError(f"gated_deltanet: num_v_heads={config['num_v_heads']} (GVA) is not implemented")
        _require(config, "output_gate_activation", ["swish", "silu"], "swish", "our GDN gate is swish")
        mk = {
            "head_dim": int(config.get("head_dim", 256)),
            "expand_v": float(config.get("expand_v", 2.0)),
            "use_gate": bool(config.get("use_gate", True)),
            "use_short_conv": bool(config.get("use_short_conv", True)),
            "conv_size": int(config.get("conv_size", 4)),
            "allow_neg_eigval": bool(config.get("allow_neg_eigval", False)),
            "norm_eps": eps,
        }
    elif mtype in ("gla", "retnet"):
        heads = int(config.get("num_heads", 4 if mtype == "gla" else 8))
        if config.get("num_kv_heads") not in (None, heads):
            raise ConversionError(f"{mtype}: num_kv_heads={config['num_kv_heads']} (grouped keys) is not implemented")
        _require(config, "feature_map", [None], None, "no q/k feature map in our variant")
        _require(config, "use_output_gate", [True], True, "our variant always has the output gate")
        _require(config, "hidden_act", ["swish", "silu"], "swish", "the output gate is swish")
        mk = {
            "expand_k": float(config.get("expand_k", 0.5 if mtype == "gla" else 1.0)),
            "expand_v": float(config.get("expand_v", 1.0 if mtype == "gla" else 2.0)),
            "norm_eps": eps,
        }
        if mtype == "gla":
            mk.update(use_short_conv=bool(config.get("use_short_conv", False)), conv_size=int(config.get("conv_size", 4)))
            if config.get("clamp_min") is not None:
                mk["clamp_min"] = float(config["clamp_min"])
        # fla's RetNet block never passes use_short_conv to its layer: retention has no conv
    elif mtype == "delta_net":
        heads = int(config.get("num_heads", 16))
        _require(config, "use_beta", [True], True, "our DeltaNet always learns beta")
        _require(config, "qk_norm", ["l2"], "l2", "our DeltaNet L2-normalises q/k")
        _require(config, "qk_activation", ["silu"], "silu", "our DeltaNet uses SiLU")
        _require(config, "use_output_norm", [True], True, "our DeltaNet always normalises its output")
        _require(config, "allow_neg_eigval", [False], False, "not implemented in our DeltaNet")
        mk = {
            "expand_k": float(config.get("expand_k", 1.0)),
            "expand_v": float(config.get("expand_v", 1.0)),
            "use_gate": bool(config.get("use_gate", False)),
            "use_short_conv": bool(config.get("use_short_conv", True)),
            "conv_size": int(config.get("conv_size", 4)),
            "norm_eps": eps,
        }
    elif mtype == "hgrn":
        heads = 1  # HGRN has one vector state; n_heads is unused by the mixer
        mk = {
            "expand_ratio": config.get("expand_ratio", 1) or 1,
            "use_short_conv": bool(config.get("use_short_conv", False)),
            "conv_size": int(config.get("conv_size", 4)),
            "norm_eps": eps,
        }
    elif mtype == "hgrn2":
        ratio = config.get("expand_ratio", 128)
        if ratio:
            heads = d // int(ratio)
        elif config.get("num_heads"):
            heads = int(config["num_heads"])
            ratio = d // heads
        else:
            raise ConversionError("hgrn2: one of expand_ratio / num_heads must be set")
        mk = {
            "expand_ratio": int(ratio),
            "use_short_conv": bool(config.get("use_short_conv", False)),
            "conv_size": int(config.get("conv_size", 4)),
            # fla 0.6's HGRN2Attention applies g_norm through the fused rms_norm_linear, whose eps
            # is its default 1e-5 whatever norm_eps says (g_norm.eps is never read)
            "norm_eps": 1e-5,
        }
    else:  # pragma: no cover - FLA_MODEL_TYPES and the branches above agree
        raise ConversionError(f"model_type {mtype!r} has no converter")

    attn_layers, spec = _attn_specs(config, n_layers)
    layout = "pure"
    if attn_layers:
        layout = layout_name(resolve_layout("attn:" + ",".join(map(str, attn_layers)), n_layers))
        assert spec is not None
        fields.update(attn_heads=spec["num_heads"], attn_kv_heads=spec["num_kv_heads"], rope_theta=spec["rope_theta"])
        if spec["qkv_bias"]:
            fields["attn_kwargs"] = {"qkv_bias": True}
    fields.update(layout=layout, n_heads=heads, mixer_kwargs=mk)
    return ModelConfig(**fields)


def checkpoint_model_dict(path_or_hub_id: Union[str, os.PathLike]) -> dict[str, Any]:
    """The ModelConfig (as a dict) a checkpoint converts to, from its config.json only (cheap):
    for filling a cell's variant/layout/size columns from a checkpoint."""
    _, config = read_fla_config(path_or_hub_id)
    if "harness_config" in config:
        return ModelConfig.from_dict(config["harness_config"]).to_dict()
    return fla_config_to_model_config(config).to_dict()


# ---------------------------------------------------------------------------------------------
# Weights


def load_fla_state_dict(directory: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: safetensors (single or sharded) or torch .bin."""
    directory = Path(directory)
    candidates = [
        ("model.safetensors.index.json", True), ("model.safetensors", False),
        ("pytorch_model.bin.index.json", True), ("pytorch_model.bin", False),
    ]
    for name, is_index in candidates:
        path = directory / name
        if not path.is_file():
            continue
        files = [path]
        if is_index:
            weight_map = json.loads(path.read_text())["weight_map"]
            files = [directory / f for f in sorted(set(weight_map.values()))]
        state: dict[str, torch.Tensor] = {}
        for f in files:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(str(f)))
            else:
                state.update(torch.load(str(f), map_location="cpu", weights_only=True))
        return state
    raise ConversionError(f"{directory} has no weights (model.safetensors[.index.json] or pytorch_model.bin[.index.json])")


_LLAMA_RENAMES = (
    (re.compile(r"^model\.embed_tokens\."), "model.embeddings."),
    (re.compile(r"^(model\.layers\.\d+)\.input_layernorm\."), r"\1.attn_norm."),
    (re.compile(r"^(model\.layers\.\d+)\.post_attention_layernorm\."), r"\1.mlp_norm."),
    (re.compile(r"^(model\.layers\.\d+)\.self_attn\."), r"\1.attn."),
)


def normalise_keys(state: Mapping[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """Hugging Face Llama names -> fla's (the only renaming between the two)."""
    if model_type != "llama":
        return dict(state)
    out = {}
    for key, tensor in state.items():
        for pattern, repl in _LLAMA_RENAMES:
            key = pattern.sub(repl, key)
        out[key] = tensor
    return out


_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(attn_norm|attn|mlp_norm|mlp)\.(.+)$")


def convert_state_dict(
    fla_state: Mapping[str, torch.Tensor],
    cfg: ModelConfig,
    info: Optional[ConvertedInfo] = None,
) -> dict[str, torch.Tensor]:
    """Rename an fla state dict to HybridLM's names (see the module docstring).

    Unknown keys raise ConversionError; fla's HGRN `lower_bounds` are dropped (recorded in
    `info`, which then says the conversion is not exact).
    """
    from harness.model.layout import ATTN

    kinds = resolve_layout(cfg.layout, cfg.n_layers)
    if cfg.variant == "attention":
        kinds = [ATTN] * cfg.n_layers
    has_prefix = any(k.startswith("model.") for k in fla_state)
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in fla_state.items():
        if key == "lm_head.weight":
            if not cfg.tie_embeddings:
                out["lm_head.weight"] = tensor
            continue
        k = key[len("model."):] if has_prefix and key.startswith("model.") else key
        if k in ("embeddings.weight", "norm.weight"):
            out[k] = tensor
            continue
        if k == "lower_bounds":
            if info is not None:
                info.exact = False
                info.notes.append(
                    "fla's HGRN forget-gate lower bounds (model.lower_bounds) were dropped: our HGRN/HGRN-2 "
                    "have no model-level lower bound, so layers > 0 differ from the checkpoint"
                )
            continue
        m = _LAYER_KEY.match(k)
        if not m:
            unknown.append(key)
            continue
        i, part, rest = int(m.group(1)), m.group(2), m.group(3)
        if part == "attn":
            if rest.startswith("rotary.") or rest.endswith("rotary_emb.inv_freq"):  # non-persistent in fla; older versions may have saved it
                continue
            if rest == "g_norm.weight" and kinds[i] != ATTN and cfg.variant in ("gla", "retnet"):
                rest = "g_norm_swish_gate.weight"  # fla's unfused (fuse_norm=False) name, same math
            out[f"layers.{i}.mixer.{rest}"] = tensor
        elif part == "mlp" and rest == "gate_proj.weight" and f"{'model.' if has_prefix else ''}layers.{i}.mlp.up_proj.weight" not in fla_state:
            # older fla fused gate and up into one projection: [2 * hidden, d] = [gate; up]
            gate, up = tensor.chunk(2, dim=0)
            out[f"layers.{i}.mlp.gate_proj.weight"] = gate
            out[f"layers.{i}.mlp.up_proj.weight"] = up
        else:
            out[f"layers.{i}.{part}.{rest}"] = tensor
    if unknown:
        raise ConversionError(f"unrecognised keys in the fla checkpoint: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
    return out


def _fill_absent_norms(model: torch.nn.Module, state: dict[str, torch.Tensor], missing: list[str]) -> list[str]:
    """fla's elementwise_affine=False norms have no weight: ours are then all ones (their init)."""
    rest = []
    for name in missing:
        if name.endswith("norm.weight") or name.endswith("norm_swish_gate.weight"):
            continue  # keeps its init (ones)
        rest.append(name)
    return rest


def load_fla_checkpoint(
    path_or_hub_id: Union[str, os.PathLike],
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    strict: bool = False,
) -> "torch.nn.Module":
    """Build our HybridLM from an fla checkpoint (directory or Hub id) and load its weights.

    `strict=True` refuses approximate conversions (HGRN/HGRN-2 lower bounds). The model gets
    `conversion` (a `ConvertedInfo`) and `source_dir` attributes.
    """
    from harness.model.lm import HybridLM

    directory, config = read_fla_config(path_or_hub_id)
    if "harness_config" in config:
        raise ConversionError(f"{directory} is a harness checkpoint; use harness.model.checkpoint.load_checkpoint")
    cfg = fla_config_to_model_config(config)
    info = ConvertedInfo(source=str(path_or_hub_id), model_type=config["model_type"])
    state = convert_state_dict(normalise_keys(load_fla_state_dict(directory), config["model_type"]), cfg, info)
    if strict and not info.exact:
        raise ConversionError(f"{path_or_hub_id}: conversion is not exact: {'; '.join(info.notes)}")
    for note in info.notes:
        warnings.warn(f"{path_or_hub_id}: {note}", stacklevel=2)
    model = HybridLM(cfg)  # initialised, then overwritten (keeps non-persistent buffers)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]
    if config.get("elementwise_affine") is False:
        missing = _fill_absent_norms(model, state, missing)
    if missing or unexpected:
        raise ConversionError(
            f"{path_or_hub_id}: converted weights do not fit the model: missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embeddings.weight
    model = model.to(device=device, dtype=dtype).eval()
    model.conversion = info  # type: ignore[attr-defined]
    model.source_dir = str(directory)  # type: ignore[attr-defined]
    return model
