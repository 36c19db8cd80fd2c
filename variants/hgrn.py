"""HGRN (Qin et al. 2023): gated vector recurrence, generation 1. After fla's HGRNAttention.

Deviation: fla's HGRN model adds a learned, depth-increasing lower bound on the forget gate of
layers > 0 (a model-level parameter); here every layer uses the layer-0 form (no lower bound).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.model.mixer import Mixer
from harness.model.modules import at_least_fp32, fused_linear, GatedRMSNorm, ShortConv
from harness.registry import register_variant


@register_variant("hgrn")
class HGRN(Mixer):
    display_name = "HGRN"
    generation = 1
    state_kind = "vector"
    gating = "data-dependent per-channel forget gate"
    flops_coeff = 5
    fla_op = "fused_recurrent_hgrn"

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 expand_ratio: float = 1, use_short_conv: bool = False, conv_size: int = 4,
                 norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        self.input_dim = int(d_model * expand_ratio)
        self.use_short_conv = use_short_conv
        self.i_proj = nn.Linear(d_model, self.input_dim, bias=False)
        self.f_proj = nn.Linear(d_model, self.input_dim, bias=False)
        self.g_proj = nn.Linear(d_model, self.input_dim, bias=False)
        if use_short_conv:
            self.i_conv1d = ShortConv(self.input_dim, conv_size, activation=None)
            self.f_conv1d = ShortConv(self.input_dim, conv_size, activation=None)
        self.g_norm = GatedRMSNorm(self.input_dim, norm_eps)
        self.o_proj = nn.Linear(self.input_dim, d_model, bias=False)

    def forward(self, x, state=None, offset=0, mode=None):
        state, new = state or {}, {}
        i, f, gp = fused_linear(x, self.i_proj, self.f_proj, self.g_proj)
        i, f = self.short_convs(state, new, i=i, f=f)
        f = F.logsigmoid(at_least_fp32(f))
        i = F.silu(i) * (1 - f.exp())  # input gate tied to the forget gate
        o, new["h"] = self.op("hgrn", mode, x.shape[1])(i, f, state.get("h"))
        o = self.g_norm(o if o.dtype == x.dtype else o.to(x.dtype), gp)
        return self.o_proj(o), new

    def state_shapes(self, batch, seq_len):
        return {"h": (batch, self.input_dim), **self.conv_state_shapes(batch)}

    @property
    def n_heads_state(self) -> int:
        return 1  # one vector state; the paper counts HGRN with H = 1

    def state_elements_per_head(self) -> int:
        return self.input_dim
