"""RetNet (Sun et al. 2023): multi-scale retention, a fixed per-head scalar decay. Generation 2.
After fla's MultiScaleRetention: rotary q/k, gamma_h = 1 - 2^(-5-h), swish-gated RMSNorm output."""
from __future__ import annotations

import torch
from torch import nn

from harness.model.mixer import MatrixStateMixer
from harness.model.modules import GatedRMSNorm, rotary_pair, split_heads
from harness.registry import register_variant


@register_variant("retnet")
class RetNet(MatrixStateMixer):
    display_name = "RetNet"
    color = "#bcbd22"  # olive: generation 2, fixed decay
    generation = 2
    gating = "fixed per-head scalar decay"
    flops_coeff = 5
    fla_op = "chunk_retention"
    fla_model_types = ("retnet",)

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 expand_k: float = 1.0, expand_v: float = 2.0, use_short_conv: bool = False,
                 conv_size: int = 4, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        self.add_qkv(int(d_model * expand_k), int(d_model * expand_v))
        self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
        if use_short_conv:
            self.declare_short_convs(conv_size, q=self.key_dim, k=self.key_dim, v=self.value_dim)
        self.g_norm_swish_gate = GatedRMSNorm(self.head_v, norm_eps)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)
        heads = torch.arange(n_heads, dtype=torch.float32, device=self.q_proj.weight.device)
        self.register_buffer("log_decay", torch.log1p(-torch.pow(2.0, -5.0 - heads)), persistent=False)

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        state, new = state or {}, {}
        q, k, v = self.short_convs(state, new, q=self.q_proj(x), k=self.k_proj(x), v=self.v_proj(x))
        q, k, v = split_heads(q, self.head_k), split_heads(k, self.head_k), split_heads(v, self.head_v)
        q, k = rotary_pair(q, k, offset)
        g = self.log_decay.expand(x.shape[0], x.shape[1], self.n_heads)
        o, new["S"] = self.op("gla", mode, x.shape[1])(q, k, v, g, initial_state=state.get("S"))
        o = self.g_norm_swish_gate(o, split_heads(self.g_proj(x), self.head_v))
        return self.o_proj(o.flatten(-2)), new

    @classmethod
    def fla_config_fields(cls, cfg):
        # fla's RetNet block never passes use_short_conv to its layer: retention has no conv
        return cfg.linear_attention_fields(default_heads=8, expand_k=1.0, expand_v=2.0)

    @classmethod
    def fla_mixer_param(cls, name: str) -> str:
        return "g_norm_swish_gate.weight" if name == "g_norm.weight" else name
