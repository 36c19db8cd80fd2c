"""DeltaNet (Schlag et al. 2021; Yang et al. 2024): the delta rule, generation 3.
After fla's DeltaNet layer: short convs with SiLU, L2-normalised q/k, beta = sigmoid(W_b x)."""
from __future__ import annotations

import torch
from torch import nn

from harness.model.mixer import MatrixStateMixer
from harness.model.modules import at_least_fp32
from harness.registry import register_variant


@register_variant("deltanet")
class DeltaNet(MatrixStateMixer):
    display_name = "DeltaNet"
    color = "#ff7f0e"  # orange: generation 3
    generation = 3
    delta_rule = True
    gating = "none (delta-rule erase along the key)"
    flops_coeff = 8
    fla_op = "chunk_delta_rule"
    fla_model_types = ("delta_net",)

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 expand_k: float = 1.0, expand_v: float = 1.0, use_short_conv: bool = True,
                 conv_size: int = 4, use_gate: bool = False, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        self.add_qkv(int(d_model * expand_k), int(d_model * expand_v))
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        if use_short_conv:
            self.declare_short_convs(conv_size, q=self.key_dim, k=self.key_dim, v=self.value_dim)
        self.add_gated_output(norm_eps, use_gate)

    def delta_rule_gates(self, x):
        return (torch.sigmoid(at_least_fp32(self.b_proj(x))),)

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        return self.delta_rule_layer(x, state, mode)

    @classmethod
    def fla_config_fields(cls, cfg):
        cfg.require("use_beta", ok=[True], default=True, why="our DeltaNet always learns beta")
        cfg.require("qk_norm", ok=["l2"], default="l2", why="our DeltaNet L2-normalises q/k")
        cfg.require("qk_activation", ok=["silu"], default="silu", why="our DeltaNet uses SiLU")
        cfg.require("use_output_norm", ok=[True], default=True, why="our DeltaNet always normalises its output")
        cfg.require("allow_neg_eigval", ok=[False], default=False, why="not implemented in our DeltaNet")
        return {"n_heads": int(cfg.get("num_heads", 16)), "mixer_kwargs": {
            "expand_k": float(cfg.get("expand_k", 1.0)), "expand_v": float(cfg.get("expand_v", 1.0)),
            "use_gate": bool(cfg.get("use_gate", False)), "use_short_conv": bool(cfg.get("use_short_conv", True)),
            "conv_size": int(cfg.get("conv_size", 4)), "norm_eps": cfg.norm_eps}}
