"""Model configuration: the few numbers that define a HybridLM, and their canonical form.

Importing it does not import torch (suite validation uses it); `resolve_model` builds mixers on
the meta device, importing torch then.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Optional

from harness.model.layout import ATTN, DEFAULT_PLACEMENT, LINEAR, canonical_layout, resolve_layout


@dataclass
class ModelConfig:
    variant: str = "gated_deltanet"  # the linear mixer used in "L" layers
    layout: str = "pure"  # see harness.model.layout
    placement: str = DEFAULT_PLACEMENT  # where a ratio layout's attention layers sit (harness.model.layout)
    #: the residual block around each mixer (harness.model.blocks): "standard" (pre-norm RMSNorm,
    #: mixer, RMSNorm, SwiGLU MLP: fla's block for every model but two), "mamba" (no MLP, fla's
    #: Mamba2 model) or "rwkv" (LayerNorms and RWKV-7's channel mix, fla's RWKV7 model)
    block: str = "standard"
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4  # heads of the linear mixer
    vocab_size: int = 256
    mlp_ratio: float = 4.0  # SwiGLU hidden = round_up(d_model * mlp_ratio * 2/3, mlp_multiple), as fla
    mlp_multiple: int = 32
    attn_heads: Optional[int] = None  # softmax heads (default: n_heads)
    attn_kv_heads: Optional[int] = None  # GQA (default: attn_heads)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    mixer_kwargs: dict[str, Any] = field(default_factory=dict)  # extra args for the linear variant
    attn_kwargs: dict[str, Any] = field(default_factory=dict)  # extra args for the attention mixer
    mode: str = "chunk"  # default parallel path of linear mixers: "chunk" or "recurrent"
    #: weight initialisation of Linear and Embedding layers (harness.model.lm.init_weights):
    #: "torch" = PyTorch's defaults (small models learn; docs/training.md#initialisation),
    #: "fla" = N(0, 0.02) everywhere, fla's initializer_range for paper-scale training
    init: Literal["torch", "fla"] = "torch"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity_dict(self) -> dict[str, Any]:
        """`to_dict` without the fields of `ADDED_FIELDS` that hold their default: the model as a
        cell stores it (fields added later then rename no cell stored before them)."""
        return {k: v for k, v in self.to_dict().items() if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known: {sorted(names)}")
        return cls(**d)

    @property
    def mlp_hidden(self) -> int:
        h = int(self.d_model * self.mlp_ratio * 2 / 3)
        m = self.mlp_multiple
        return m * ((h + m - 1) // m)


#: the residual blocks harness.model.blocks builds (ModelConfig.block)
BLOCKS = ("standard", "mamba", "rwkv")

#: ModelConfig fields added after cells were stored, with their defaults: a cell's model dict
#: holds them only when set to something else (`ModelConfig.identity_dict`, `resolve_model`)
ADDED_FIELDS: dict[str, Any] = {"placement": DEFAULT_PLACEMENT, "block": "standard"}


def resolve_model(model: dict[str, Any]) -> dict[str, Any]:
    """Fill in and canonicalise a model dict; raise ValueError if it cannot be built.

    The layout is stored under its canonical name and placement (harness.model.layout
    .canonical_layout: "LLLA" at depth 4 becomes "3:1", "AALLLLLL" becomes "3:1" placed
    "bottom", and the default placement is left out). A model with
    no linear layer is a Transformer whatever the variant, so its variant becomes "attention"
    (and its mixer_kwargs, which only the linear variant reads, are dropped): the Transformer
    baseline is then one cell, not one per variant. Variant "attention" likewise means every
    layer is softmax attention (as HybridLM builds it), so its layout becomes "transformer".
    """
    model = {**ModelConfig().to_dict(), **model}
    if model["block"] not in BLOCKS:
        raise ValueError(f"unknown block {model['block']!r}; expected one of {', '.join(BLOCKS)}")
    kinds = resolve_layout(model["layout"], model["n_layers"], model["placement"])
    if model["variant"] == "attention":
        kinds = [ATTN] * len(kinds)
    if LINEAR not in kinds:
        model["variant"] = "attention"
        model["mixer_kwargs"] = {}
    model["layout"], model["placement"] = canonical_layout(kinds)
    model = ModelConfig.from_dict(model).identity_dict()
    rest = {k: v for k, v in model.items() if k not in ("n_layers", "layout", "placement")}
    _check_mixers(json.dumps(rest, sort_keys=True, default=str), tuple(sorted(set(kinds))))
    return model


@lru_cache(maxsize=1024)
def _check_mixers(model_json: str, kinds: tuple[str, ...]) -> None:
    """Build one mixer of each kind on the meta device: catches head counts that do not
    divide, mixer_kwargs the variant rejects, and the like, without allocating anything."""
    try:
        import torch

        from harness.model.lm import build_mixer
    except ImportError:  # model code unavailable: leave it to run time
        return
    cfg = ModelConfig.from_dict({**json.loads(model_json), "n_layers": 1, "layout": "pure"})
    for kind in kinds:
        try:
            with torch.device("meta"):
                build_mixer(cfg, kind, 0)
        except Exception as exc:
            what = "softmax attention" if kind == ATTN else f"variant {cfg.variant!r}"
            raise ValueError(f"cannot build {what} with this config: {exc}") from None
