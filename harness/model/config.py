"""Model configuration: the few numbers that define a HybridLM, and their canonical form.

Importing it does not import torch (suite validation uses it). The canonical form of a cell's
model, checked by building its mixers, is harness.model.resolve.resolve_model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.model.layout import DEFAULT_PLACEMENT


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
    attn_heads: int | None = None  # softmax heads (default: n_heads)
    attn_kv_heads: int | None = None  # GQA (default: attn_heads)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    mixer_kwargs: dict[str, Any] = field(default_factory=dict)  # extra args for the linear variant
    attn_kwargs: dict[str, Any] = field(default_factory=dict)  # extra args for the attention mixer
    #: sliding-window attention: every attention layer's query sees its last `window` keys, itself
    #: included, and its KV cache holds at most `window` tokens (variants/attention.py); None = full
    window: int | None = None
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
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
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
#: holds them only when set to something else (`ModelConfig.identity_dict`, harness.model.resolve)
ADDED_FIELDS: dict[str, Any] = {"placement": DEFAULT_PLACEMENT, "block": "standard", "window": None}
