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
layout (``canonical_layout`` of the ``attn:i,j`` pattern: e.g. ``"3:1"`` when it is the paper's
regular block, a ratio and a placement such as ``"3:1"`` at ``"bottom"``, else an explicit
``LLAL...`` pattern), so converted models land in the same
variant/layout columns as ours. fla's softmax layer needs flash-attn; ours is SDPA, so the
converted model runs anywhere torch does, CPU included.

Exact for gated_deltanet, gla, delta_net, retnet, hgrn2 (without lower bounds), kda, mamba2 (one
B/C group: variants/mamba2.py), rwkv7, transformer and hybrid attention layers (tests/test_convert.py
holds our logits to fla's own forward), and for Hugging Face ``llama`` checkpoints (held to
transformers' LlamaForCausalLM). Mamba2 and RWKV7 models have their own blocks (the variant's
`fla_config_fields` sets `block`, its `fla_key` maps ``backbone.*`` / ``ffn*`` names onto the
table). HGRN / HGRN-2 checkpoints trained with fla's ``use_lower_bound=True`` (the default) convert
*approximately*: our mixers have no model-level forget-gate lower bound, so ``model.lower_bounds``
is dropped with a warning (see `ConvertedInfo.exact`). A sliding window (fla's ``window_size``)
becomes ``ModelConfig.window`` when every attention layer has the same one; attention layers
with different windows cannot be one ModelConfig and are refused. Head-wise hybrids
(``"heads:1/4"``, harness.model.headwise) are converted-from-nothing: fla has no such layer, no
fla config becomes one, and `convert_state_dict` refuses a head-wise ModelConfig. Options we do not implement
(GQA inside GLA/RetNet, feature maps, qk-norm, GVA in GDN/KDA, ...) raise `ConversionError`
instead of converting wrongly.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.integrations.hub import resolve_checkpoint_dir
from harness.model.config import ModelConfig
from harness.model.fla_config import ConversionError, FlaConfig, mlp_hidden_fields
from harness.model.layout import canonical_layout, resolve_layout

__all__ = ["ConversionError", "ConvertedInfo", "fla_model_types", "FlaConfig", "is_fla_checkpoint", "read_fla_config",
           "fla_config_to_model_config", "convert_state_dict", "normalise_keys", "load_fla_state_dict",
           "load_fla_checkpoint", "checkpoint_model_dict"]

def fla_model_types() -> dict[str, str]:
    """fla `model_type` -> our variant name: what each registered variant declares it converts
    (`Mixer.fla_model_types`), plug-ins included."""
    from harness.registry import VARIANTS

    return {mtype: name for name, cls in VARIANTS.items() for mtype in getattr(cls, "fla_model_types", ())}


@dataclass
class ConvertedInfo:
    """What a conversion did: the source, whether it is exact, and any notes."""

    source: str
    model_type: str
    exact: bool = True
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading the checkpoint (finding it: harness.integrations.hub)


def read_fla_config(path_or_hub_id: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(checkpoint directory, its config.json as a dict)."""
    directory = resolve_checkpoint_dir(path_or_hub_id)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise ConversionError(f"{directory} has no config.json")
    return directory, json.loads(cfg_path.read_text())


def is_fla_checkpoint(directory: str | os.PathLike) -> bool:
    """True for a local directory whose config.json has an fla model_type we convert."""
    cfg_path = Path(directory) / "config.json"
    if not cfg_path.is_file():
        return False
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "harness_config" not in cfg and cfg.get("model_type") in fla_model_types()


# ---------------------------------------------------------------------------------------------
# Config


def _attn_specs(config: Mapping[str, Any], n_layers: int) -> tuple[list[int], dict[str, Any] | None]:
    """fla's `attn` field -> (attention layer indices, the one shared spec)."""
    attn = config.get("attn")
    if not attn:
        return [], None
    specs = attn if isinstance(attn, list) else [attn]
    layers: list[int] = []
    shared: dict[str, Any] | None = None
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
        window = norm["window_size"]
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
            raise ConversionError(f"attn spec {dict(spec)}: window_size must be a positive number of tokens "
                                  f"(or null for full attention), got {window!r}")
        if spec.get("qk_norm"):
            raise ConversionError(f"attn spec {dict(spec)}: qk_norm is not implemented by our attention mixer")
        if shared is not None and norm["window_size"] != shared["window_size"]:
            raise ConversionError(
                f"attention layers have different sliding windows (window_size {shared['window_size']} vs "
                f"{norm['window_size']}; null = full attention): a ModelConfig has one window for every "
                "attention layer (ModelConfig.window), so this model cannot be converted"
            )
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
    return mlp_hidden_fields(int(inter), d)


def fla_config_to_model_config(config: Mapping[str, Any]) -> ModelConfig:
    """An fla config.json (as a dict) -> the equivalent ModelConfig: the model-level fields here,
    the variant's own from its `fla_config_fields` (harness.model.mixer.Mixer).

    Raises ConversionError for a model type or option our variants do not implement.
    """
    from harness.registry import get_variant

    mtype = config.get("model_type")
    types = fla_model_types()
    if mtype not in types:
        raise ConversionError(f"model_type {mtype!r} is not convertible; supported: {', '.join(sorted(types))}")
    if config.get("attnres_block_size") is not None:
        raise ConversionError(f"{mtype}: attnres_block_size (attention residuals) is not implemented")
    cfg = FlaConfig(config)
    n_layers = int(config["num_hidden_layers"])
    fields: dict[str, Any] = {
        "variant": types[mtype], "n_layers": n_layers, "d_model": cfg.d_model,
        "vocab_size": int(config["vocab_size"]), "norm_eps": cfg.norm_eps,
        "tie_embeddings": bool(config.get("tie_word_embeddings", False)),
        "layout": "pure",
    }
    own = get_variant(types[mtype]).fla_config_fields(cfg)  # may name its own block (Mamba2, RWKV7)
    if own.get("block", "standard") == "standard":  # fla's GatedMLP
        fields.update(_mlp_fields(config, cfg.d_model))  # elementwise_affine=False: no norm weights, ones are filled in
    fields.update(own)
    attn_layers, spec = _attn_specs(config, n_layers) if fields["layout"] != "transformer" else ([], None)
    if attn_layers:
        assert spec is not None
        fields["layout"], fields["placement"] = canonical_layout(
            resolve_layout("attn:" + ",".join(map(str, attn_layers)), n_layers))
        fields.update(attn_heads=spec["num_heads"], attn_kv_heads=spec["num_kv_heads"], rope_theta=spec["rope_theta"])
        if spec["qkv_bias"]:
            fields["attn_kwargs"] = {"qkv_bias": True}
        if spec["window_size"] is not None:  # fla's window_size: the query sees itself and W - 1 keys back
            fields["window"] = spec["window_size"]
    return ModelConfig(**fields)


def checkpoint_model_dict(path_or_hub_id: str | os.PathLike) -> dict[str, Any]:
    """The ModelConfig (as a dict) a checkpoint converts to, from its config.json only (cheap):
    for filling a cell's variant/layout/size columns from a checkpoint."""
    _, config = read_fla_config(path_or_hub_id)
    if "harness_config" in config:
        return ModelConfig.from_dict(config["harness_config"]).to_dict()
    return fla_config_to_model_config(config).to_dict()


# ---------------------------------------------------------------------------------------------
# Weights


def load_fla_state_dict(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
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
    raise ConversionError(f"{directory} has no weights (model.safetensors[.index.json] or "
                          "pytorch_model.bin[.index.json])")


def normalise_keys(state: Mapping[str, torch.Tensor], model_type: str,
                   info: ConvertedInfo | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors in fla's naming, through the variant's `fla_key` (a Hugging Face
    Llama's names -> fla's; a tensor the variant drops is recorded in `info`: not exact)."""
    from harness.registry import get_variant

    cls = get_variant(fla_model_types()[model_type])
    out = {}
    for key, tensor in state.items():
        new = cls.fla_key(key, model_type)
        if new is None:
            if info is not None:
                info.exact = False
                if cls.fla_dropped_note not in info.notes:
                    info.notes.append(cls.fla_dropped_note or f"{key} was dropped")
            continue
        out[new] = tensor
    return out


_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(pre_norm|attn_norm|attn|mlp_norm|mlp)\.(.+)$")


def convert_state_dict(
    fla_state: Mapping[str, torch.Tensor],
    cfg: ModelConfig,
    info: ConvertedInfo | None = None,
) -> dict[str, torch.Tensor]:
    """Rename an fla state dict to HybridLM's names (see the module docstring).

    Unknown keys raise ConversionError. Parameter names inside a linear layer pass through the
    variant's `fla_mixer_param`.
    """
    from harness.model.layout import ATTN, HEADWISE
    from harness.registry import get_variant

    linear = get_variant(cfg.variant)
    kinds = resolve_layout(cfg.layout, cfg.n_layers, cfg.placement)
    if cfg.variant == "attention":
        kinds = [ATTN] * cfg.n_layers
    if HEADWISE in kinds:
        raise ConversionError(f"layout {cfg.layout!r} is a head-wise hybrid (harness.model.headwise): converted-from-"
                              f"nothing, no fla checkpoint has its layers; train it from scratch")
    has_prefix = any(k.startswith("model.") for k in fla_state)
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in fla_state.items():
        if key == "lm_head.weight":
            if not cfg.tie_embeddings:
                out["lm_head.weight"] = tensor
            continue
        k = key[len("model."):] if has_prefix and key.startswith("model.") else key
        if k in ("embeddings.weight", "norm.weight", "norm.bias"):
            out[k] = tensor
            continue
        m = _LAYER_KEY.match(k)
        if not m:
            unknown.append(key)
            continue
        i, part, rest = int(m.group(1)), m.group(2), m.group(3)
        if part == "attn":
            if rest.startswith("rotary.") or rest.endswith("rotary_emb.inv_freq"):
                continue  # non-persistent in fla; older versions may have saved it
            if kinds[i] != ATTN:
                rest = linear.fla_mixer_param(rest)
            out[f"layers.{i}.mixer.{rest}"] = tensor
        elif (part == "mlp" and rest == "gate_proj.weight"
              and f"{'model.' if has_prefix else ''}layers.{i}.mlp.up_proj.weight" not in fla_state):
            # older fla fused gate and up into one projection: [2 * hidden, d] = [gate; up]
            gate, up = tensor.chunk(2, dim=0)
            out[f"layers.{i}.mlp.gate_proj.weight"] = gate
            out[f"layers.{i}.mlp.up_proj.weight"] = up
        else:
            out[f"layers.{i}.{part}.{rest}"] = tensor
    if unknown:
        raise ConversionError(f"unrecognised keys in the fla checkpoint: {unknown[:10]}"
                              f"{' ...' if len(unknown) > 10 else ''}")
    return out


def _fill_absent_norms(missing: list[str]) -> list[str]:
    """fla's elementwise_affine=False norms have no weight: ours keep their init (all ones)."""
    return [name for name in missing if not name.endswith(("norm.weight", "norm_swish_gate.weight"))]


def load_fla_checkpoint(
    path_or_hub_id: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    strict: bool = False,
) -> torch.nn.Module:
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
    state = convert_state_dict(normalise_keys(load_fla_state_dict(directory), config["model_type"], info), cfg, info)
    if strict and not info.exact:
        raise ConversionError(f"{path_or_hub_id}: conversion is not exact: {'; '.join(info.notes)}")
    for note in info.notes:
        warnings.warn(f"{path_or_hub_id}: {note}", stacklevel=2)
    model = HybridLM(cfg)  # initialised, then overwritten (keeps non-persistent buffers)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]
    if config.get("elementwise_affine") is False:
        missing = _fill_absent_norms(missing)
    if missing or unexpected:
        raise ConversionError(
            f"{path_or_hub_id}: converted weights do not fit the model: missing {missing[:10]}, "
            f"unexpected {unexpected[:10]}"
        )
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embeddings.weight
    model = model.to(device=device, dtype=dtype).eval()
    model.conversion = info  # type: ignore[attr-defined]
    model.source_dir = str(directory)  # type: ignore[attr-defined]
    return model
