"""Gated DeltaNet (Yang et al. 2025): the delta rule plus a data-dependent scalar decay per head.
Generation 3. After fla's GatedDeltaNet layer: g = -exp(A_log) * softplus(W_a x + dt_bias),
beta = sigmoid(W_b x), short convs with SiLU, L2-normalised q/k, swish-gated RMSNorm output."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


@register_variant("gated_deltanet")
class GatedDeltaNet(MatrixStateMixer):
    display_name = "Gated DeltaNet"
    color = "#d62728"  # red (generation 3)
    generation = 3
    gating = "data-dependent per-head scalar decay"
    delta_rule = True
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
        self.set_dims(n_heads * head_k, n_heads * int(head_k * expand_v))
        self.use_gate, self.allow_neg_eigval = use_gate, allow_neg_eigval
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.a_proj = nn.Linear(d_model, n_heads, bias=False)
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads))
        self.dt_bias = nn.Parameter(torch.empty(n_heads))
        if self.A_log.device.type != "meta":  # fla's initialisation
            self.A_log.data.copy_(torch.empty(n_heads).uniform_(0, 16).log())
            dt = torch.exp(torch.rand(n_heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)).clamp(min=1e-4)
            self.dt_bias.data.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
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
        q, k, v, a, b, *gp = fused_linear(x, self.q_proj, self.k_proj, self.v_proj, self.a_proj, self.b_proj, *gate)
        q, k, v = self.short_convs(state, new, q=q, k=k, v=v)
        if not self.use_short_conv:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q, k = l2norm_pair(split_heads(q, self.head_k), split_heads(k, self.head_k))
        g = -at_least_fp32(self.A_log).exp() * F.softplus(at_least_fp32(a) + self.dt_bias)
        beta = torch.sigmoid(at_least_fp32(b))
        if self.allow_neg_eigval:
            beta = beta * 2
        o, new["S"] = self.op("delta_rule", mode, x.shape[1])(q, k, split_heads(v, self.head_v), beta, g,
                                                              initial_state=state.get("S"))
        o = self.o_norm(o, split_heads(gp[0], self.head_v)) if self.use_gate else self.o_norm(o)
        return self.o_proj(o.flatten(-2)), new

    @classmethod
    def fla_config_fields(cls, cfg):
        heads = int(cfg.get("num_heads", 6))
        if cfg.get("num_v_heads") not in (None, heads):
            raise cfg.unsupported(f"num_v_heads={cfg.get('num_v_heads')} (GVA) is not implemented")
        cfg.require("output_gate_activation", ["swish", "silu"], "swish", "our GDN gate is swish")
        return {"n_heads": heads, "mixer_kwargs": {
            "head_dim": int(cfg.get("head_dim", 256)), "expand_v": float(cfg.get("expand_v", 2.0)),
            "use_gate": bool(cfg.get("use_gate", True)), "use_short_conv": bool(cfg.get("use_short_conv", True)),
            "conv_size": int(cfg.get("conv_size", 4)), "allow_neg_eigval": bool(cfg.get("allow_neg_eigval", False)),
            "norm_eps": cfg.norm_eps}}
