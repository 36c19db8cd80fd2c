"""RetNet (Sun et al. 2023): multi-scale retention, a fixed per-head scalar decay. Generation 2.
After fla's MultiScaleRetention: rotary q/k, gamma_h = 1 - 2^(-5-h), swish-gated RMSNorm output."""
from __future__ import annotations

import torch
from torch import nn

from harness.model.mixer import Mixer
from harness.model.modules import fused_linear, GatedRMSNorm, ShortConv, rotary_pair, split_heads
from harness.registry import register_variant


@register_variant("retnet")
class RetNet(Mixer):
    display_name = "RetNet"
    generation = 2
    gating = "fixed per-head scalar decay"
    flops_coeff = 5
    fla_op = "chunk_retention"

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 expand_k: float = 1.0, expand_v: float = 2.0, use_short_conv: bool = False,
                 conv_size: int = 4, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        self.key_dim, self.value_dim = int(d_model * expand_k), int(d_model * expand_v)
        if self.key_dim % n_heads or self.value_dim % n_heads:
            raise ValueError(f"retnet: key_dim {self.key_dim} and value_dim {self.value_dim} must divide by n_heads={n_heads}")
        self.head_k, self.head_v = self.key_dim // n_heads, self.value_dim // n_heads
        self.use_short_conv = use_short_conv
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
        if use_short_conv:
            self.q_conv1d = ShortConv(self.key_dim, conv_size)
            self.k_conv1d = ShortConv(self.key_dim, conv_size)
            self.v_conv1d = ShortConv(self.value_dim, conv_size)
        self.g_norm_swish_gate = GatedRMSNorm(self.head_v, norm_eps)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)
        heads = torch.arange(n_heads, dtype=torch.float32, device=self.q_proj.weight.device)
        self.register_buffer("log_decay", torch.log1p(-torch.pow(2.0, -5.0 - heads)), persistent=False)

    def forward(self, x, state=None, offset=0, mode=None):
        state, new = state or {}, {}
        q, k, v, gv = fused_linear(x, self.q_proj, self.k_proj, self.v_proj, self.g_proj)
        q, k, v = self.short_convs(state, new, q=q, k=k, v=v)
        q, k, v = split_heads(q, self.head_k), split_heads(k, self.head_k), split_heads(v, self.head_v)
        q, k = rotary_pair(q, k, offset)
        g = self.log_decay.expand(x.shape[0], x.shape[1], self.n_heads)
        o, new["S"] = self.op("gla", mode, x.shape[1])(q, k, v, g, initial_state=state.get("S"))
        o = self.g_norm_swish_gate(o, split_heads(gv, self.head_v))
        return self.o_proj(o.flatten(-2)), new

    def state_shapes(self, batch, seq_len):
        return {"S": (batch, self.n_heads, self.head_k, self.head_v), **self.conv_state_shapes(batch)}

    def state_elements_per_head(self) -> int:
        return self.head_k * self.head_v
