"""Gated DeltaNet (Yang et al. 2025): the delta rule plus a data-dependent scalar decay per head.
Generation 3. After fla's GatedDeltaNet layer: g = -exp(A_log) * softplus(W_a x + dt_bias),
beta = sigmoid(W_b x), short convs with SiLU, L2-normalised q/k, swish-gated RMSNorm output."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.model.mixer import MatrixStateMixer
from harness.model.modules import at_least_fp32, init_dt_bias
from harness.registry import register_variant


@register_variant("gated_deltanet")
class GatedDeltaNet(MatrixStateMixer):
    display_name = "Gated DeltaNet"
    color = "#d62728"  # red: generation 3
    generation = 3
    delta_rule = True
    gating = "data-dependent per-head scalar decay"
    flops_coeff = 8
    fla_op = "chunk_gated_delta_rule"
    fla_model_types = ("gated_deltanet",)

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 head_dim: int | None = None, expand_v: float = 2.0, use_short_conv: bool = True,
                 conv_size: int = 4, use_gate: bool = True, allow_neg_eigval: bool = False,
                 norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        head_k = head_dim or d_model // n_heads
        if not math.isclose(head_k * expand_v, int(head_k * expand_v)):
            raise ValueError(f"gated_deltanet: head_dim {head_k} * expand_v {expand_v} is not an integer")
        self.add_qkv(n_heads * head_k, n_heads * int(head_k * expand_v))
        self.allow_neg_eigval = allow_neg_eigval
        self.a_proj = nn.Linear(d_model, n_heads, bias=False)
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(0, 16).log())  # fla's initialisation
        self.dt_bias = nn.Parameter(init_dt_bias(n_heads))
        if use_short_conv:
            self.declare_short_convs(conv_size, q=self.key_dim, k=self.key_dim, v=self.value_dim)
        self.add_gated_output(norm_eps, use_gate)

    def delta_rule_gates(self, x):
        g = -at_least_fp32(self.A_log).exp() * F.softplus(at_least_fp32(self.a_proj(x)) + self.dt_bias)
        beta = torch.sigmoid(at_least_fp32(self.b_proj(x)))
        if self.allow_neg_eigval:
            beta = beta * 2
        return beta, g

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        return self.delta_rule_layer(x, state, mode)

    @classmethod
    def fla_config_fields(cls, cfg):
        heads = int(cfg.get("num_heads", 6))
        if cfg.get("num_v_heads") not in (None, heads):
            raise cfg.unsupported(f"num_v_heads={cfg.get('num_v_heads')} (GVA) is not implemented")
        cfg.require("output_gate_activation", ok=["swish", "silu"], default="swish", why="our GDN gate is swish")
        return {"n_heads": heads, "mixer_kwargs": {
            "head_dim": int(cfg.get("head_dim", 256)), "expand_v": float(cfg.get("expand_v", 2.0)),
            "use_gate": bool(cfg.get("use_gate", True)), "use_short_conv": bool(cfg.get("use_short_conv", True)),
            "conv_size": int(cfg.get("conv_size", 4)), "allow_neg_eigval": bool(cfg.get("allow_neg_eigval", False)),
            "norm_eps": cfg.norm_eps}}
