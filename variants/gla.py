"""GLA (Yang et al. 2024): gated linear attention, data-dependent per-channel key-side decay.
Generation 2. After fla's GatedLinearAttention: low-rank gate, logsigmoid / 16, swish-gated norm."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.model.mixer import MatrixStateMixer
from harness.model.modules import GatedRMSNorm, at_least_fp32, split_heads
from harness.registry import register_variant


@register_variant("gla")
class GLA(MatrixStateMixer):
    display_name = "GLA"
    color = "#1f77b4"  # blue: generation 2, data-dependent gating
    generation = 2
    gating = "data-dependent per-channel decay"
    flops_coeff = 7
    fla_op = "chunk_gla"
    fla_model_types = ("gla",)

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 expand_k: float = 0.5, expand_v: float = 1.0, use_short_conv: bool = False,
                 conv_size: int = 4, gate_logit_normalizer: float = 16, gate_low_rank_dim: int = 16,
                 clamp_min: float | None = None, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        self.add_qkv(int(d_model * expand_k), int(d_model * expand_v))
        self.gate_logit_normalizer, self.clamp_min = gate_logit_normalizer, clamp_min
        self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
        if use_short_conv:
            self.declare_short_convs(conv_size, q=self.key_dim, k=self.key_dim, v=self.value_dim)
        self.gk_proj = nn.Sequential(nn.Linear(d_model, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, self.key_dim, bias=True))
        self.g_norm_swish_gate = GatedRMSNorm(self.head_v, norm_eps)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        state, new = state or {}, {}
        q, k, v = self.short_convs(state, new, q=self.q_proj(x), k=self.k_proj(x), v=self.v_proj(x))
        gate = self.g_proj(x)
        gk = F.logsigmoid(at_least_fp32(self.gk_proj(x))) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = torch.clamp_min(gk, self.clamp_min)
        q, k, gk = (split_heads(t, self.head_k) for t in (q, k, gk))
        o, new["S"] = self.op("gla", mode, x.shape[1])(q, k, split_heads(v, self.head_v), gk,
                                                       initial_state=state.get("S"))
        o = self.g_norm_swish_gate(o, split_heads(gate, self.head_v))
        return self.o_proj(o.flatten(-2)), new

    @classmethod
    def fla_config_fields(cls, cfg):
        fields = cfg.linear_attention_fields(default_heads=4, expand_k=0.5, expand_v=1.0)
        fields["mixer_kwargs"].update(use_short_conv=bool(cfg.get("use_short_conv", False)),
                                      conv_size=int(cfg.get("conv_size", 4)))
        if cfg.get("clamp_min") is not None:
            fields["mixer_kwargs"]["clamp_min"] = float(cfg.get("clamp_min"))
        return fields

    @classmethod
    def fla_mixer_param(cls, name: str) -> str:
        # fla's unfused (fuse_norm=False) name of the output norm, the same math
        return "g_norm_swish_gate.weight" if name == "g_norm.weight" else name
