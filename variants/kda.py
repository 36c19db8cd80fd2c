"""Kimi Delta Attention (KDA; Kimi Linear, Moonshot AI 2025): the gated delta rule with a
data-dependent per-channel (key-side) decay. Generation 3. After fla's KimiDeltaAttention:
short convs with SiLU, L2-normalised q/k, a low-rank decay projection
g = -exp(A_log) * softplus(f_proj(x) + dt_bias) per key channel, beta = sigmoid(b_proj(x)), and
a sigmoid-gated RMSNorm output through a low-rank gate projection (g_proj, with a bias)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.model.mixer import MatrixStateMixer
from harness.model.modules import GatedRMSNorm, at_least_fp32, init_dt_bias, split_heads
from harness.registry import register_variant


@register_variant("kda")
class KDA(MatrixStateMixer):
    display_name = "KDA"
    color = "#9467bd"  # purple: generation 3
    generation = 3
    delta_rule = True
    gating = "data-dependent per-channel decay"
    # Table 7's rule extended: GLA's per-channel decay (7) plus the delta rule's rank-one
    # correction (+3, DeltaNet's 8 over RetNet's 5); see harness.model.costs
    flops_coeff = 10
    fla_op = "chunk_kda"
    fla_model_types = ("kda",)

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 head_dim: int | None = None, expand_v: float = 1.0, use_short_conv: bool = True,
                 conv_size: int = 4, allow_neg_eigval: bool = False, lower_bound: float | None = None,
                 norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        head_k = head_dim or d_model // n_heads
        if not math.isclose(head_k * expand_v, int(head_k * expand_v)):
            raise ValueError(f"kda: head_dim {head_k} * expand_v {expand_v} is not an integer")
        head_v = int(head_k * expand_v)
        self.add_qkv(n_heads * head_k, n_heads * head_v)
        self.allow_neg_eigval, self.lower_bound = allow_neg_eigval, lower_bound
        if use_short_conv:
            self.declare_short_convs(conv_size, q=self.key_dim, k=self.key_dim, v=self.value_dim)
        # low-rank projections through head_v, as fla's (f: the decay, g: the output gate)
        self.f_proj = nn.Sequential(nn.Linear(d_model, head_v, bias=False),
                                    nn.Linear(head_v, self.key_dim, bias=False))
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(1, 16).log())  # fla's initialisation
        self.dt_bias = nn.Parameter(init_dt_bias(self.key_dim))
        self.g_proj = nn.Sequential(nn.Linear(d_model, head_v, bias=False),
                                    nn.Linear(head_v, self.value_dim, bias=True))
        self.o_norm = GatedRMSNorm(head_v, norm_eps, activation="sigmoid")
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        state, new = state or {}, {}
        q, k, v = self.delta_rule_inputs(state, new, self.q_proj(x), self.k_proj(x), self.v_proj(x))
        f = split_heads(at_least_fp32(self.f_proj(x)), self.head_k)  # [B, T, H, head_k]
        f = f + self.dt_bias.view(self.n_heads, self.head_k)
        A = at_least_fp32(self.A_log).exp()[:, None]  # [H, 1]
        if self.lower_bound is None:
            g = -A * F.softplus(f)
        else:  # fla's bounded gate: decays in (exp(lower_bound), 1)
            g = self.lower_bound * torch.sigmoid(A * f)
        beta = torch.sigmoid(at_least_fp32(self.b_proj(x))) * (2.0 if self.allow_neg_eigval else 1.0)
        o, new["S"] = self.op("kda", mode, x.shape[1])(q, k, v, beta, g, initial_state=state.get("S"))
        o = self.o_norm(o, split_heads(self.g_proj(x), self.head_v))
        return self.o_proj(o.flatten(-2)), new

    @classmethod
    def fla_config_fields(cls, cfg):
        heads = int(cfg.get("num_heads", 16))
        if cfg.get("num_v_heads") not in (None, heads):
            raise cfg.unsupported(f"num_v_heads={cfg.get('num_v_heads')} (GVA) is not implemented")
        lower = cfg.get("lower_bound")
        return {"n_heads": heads, "mixer_kwargs": {
            "head_dim": int(cfg.get("head_dim", 128)), "expand_v": float(cfg.get("expand_v", 1.0)),
            "use_short_conv": bool(cfg.get("use_short_conv", True)), "conv_size": int(cfg.get("conv_size", 4)),
            "allow_neg_eigval": bool(cfg.get("allow_neg_eigval", False)),
            "lower_bound": None if lower is None else float(lower), "norm_eps": cfg.norm_eps}}
