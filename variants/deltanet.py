"""DeltaNet (Schlag et al. 2021; Yang et al. 2024): the delta rule, generation 3.
After fla's DeltaNet layer: short convs with SiLU, L2-normalised q/k, beta = sigmoid(W_b x)."""
from __future__ import annotations

import torch
from torch import nn

from harness.model.mixer import MatrixStateMixer
from harness.model.modules import (
    GatedRMSNorm,
    RMSNorm,
    at_least_fp32,
    fused_linear,
    l2norm_pair,
    split_heads,
)
from harness.registry import register_variant


@register_variant("deltanet")
class DeltaNet(MatrixStateMixer):
    display_name = "DeltaNet"
    color = "#ff7f0e"  # orange (generation 3)
    generation = 3
    gating = "none (delta-rule erase along the key)"
    delta_rule = True
    flops_coeff = 8
    fla_op = "chunk_delta_rule"
    fla_model_types = ("delta_net",)

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 expand_k: float = 1.0, expand_v: float = 1.0, use_short_conv: bool = True,
                 conv_size: int = 4, use_gate: bool = False, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        self.set_dims(int(d_model * expand_k), int(d_model * expand_v))
        self.use_gate = use_gate
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        if use_short_conv:
            self.declare_short_convs(conv_size, q=self.key_dim, k=self.key_dim, v=self.value_dim)
        if use_gate:
            self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
            self.o_norm = GatedRMSNorm(self.head_v, norm_eps)
        else:
            self.o_norm = RMSNorm(self.head_v, norm_eps)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)

    def forward(self, x, state=None, offset=0, mode=None):
        state, new = state or {}, {}
        gate = (self.g_proj,) if self.use_gate else ()
        q, k, v, b, *gp = fused_linear(x, self.q_proj, self.k_proj, self.v_proj, self.b_proj, *gate)
        q, k, v = self.short_convs(state, new, q=q, k=k, v=v)
        if not self.use_short_conv:  # fla applies the q/k activation in the conv; without one, apply it here
            q, k, v = torch.nn.functional.silu(q), torch.nn.functional.silu(k), torch.nn.functional.silu(v)
        q, k = l2norm_pair(split_heads(q, self.head_k), split_heads(k, self.head_k))
        beta = torch.sigmoid(at_least_fp32(b))
        o, new["S"] = self.op("delta_rule", mode, x.shape[1])(q, k, split_heads(v, self.head_v), beta,
                                                              initial_state=state.get("S"))
        o = self.o_norm(o, split_heads(gp[0], self.head_v)) if self.use_gate else self.o_norm(o)
        return self.o_proj(o.flatten(-2)), new

    @classmethod
    def fla_config_fields(cls, cfg):
        cfg.require("use_beta", [True], True, "our DeltaNet always learns beta")
        cfg.require("qk_norm", ["l2"], "l2", "our DeltaNet L2-normalises q/k")
        cfg.require("qk_activation", ["silu"], "silu", "our DeltaNet uses SiLU")
        cfg.require("use_output_norm", [True], True, "our DeltaNet always normalises its output")
        cfg.require("allow_neg_eigval", [False], False, "not implemented in our DeltaNet")
        return {"n_heads": int(cfg.get("num_heads", 16)), "mixer_kwargs": {
            "expand_k": float(cfg.get("expand_k", 1.0)), "expand_v": float(cfg.get("expand_v", 1.0)),
            "use_gate": bool(cfg.get("use_gate", False)), "use_short_conv": bool(cfg.get("use_short_conv", True)),
            "conv_size": int(cfg.get("conv_size", 4)), "norm_eps": cfg.norm_eps}}
