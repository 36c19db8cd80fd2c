"""HGRN-2 (Qin et al. 2024): state expansion with a tied gate, the forget gate a_t also gives the
key (1 - a_t). Generation 2. After fla's HGRN2Attention (runs on the GLA op).

Deviation: fla's HGRN2 model adds a learned depth-increasing lower bound on the forget gate of
layers > 0 (a model-level parameter); here every layer uses the layer-0 form (no lower bound).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.model.mixer import Mixer
from harness.model.modules import at_least_fp32, fused_linear, RMSNorm, ShortConv, split_heads
from harness.registry import register_variant


@register_variant("hgrn2")
class HGRN2(Mixer):
    display_name = "HGRN-2"
    generation = 2
    gating = "data-dependent per-channel decay, tied to the key"
    flops_coeff = 7
    fla_op = "chunk_gla"

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 expand_ratio: int | None = None, use_short_conv: bool = False, conv_size: int = 4,
                 norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        if d_model % n_heads:
            raise ValueError(f"hgrn2: d_model {d_model} must divide by n_heads={n_heads}")
        # fla: expand_ratio is the per-head forget (key) dim; default d_model // n_heads
        self.expand_ratio = expand_ratio or d_model // n_heads
        self.forget_dim = n_heads * self.expand_ratio
        self.head_i = d_model // n_heads
        self.use_short_conv = use_short_conv
        self.q_proj = nn.Linear(d_model, self.forget_dim, bias=False)
        self.f_proj = nn.Linear(d_model, self.forget_dim, bias=False)
        self.i_proj = nn.Linear(d_model, d_model, bias=False)
        if use_short_conv:
            self.q_conv1d = ShortConv(self.forget_dim, conv_size, activation=None)
            self.f_conv1d = ShortConv(self.forget_dim, conv_size, activation=None)
            self.i_conv1d = ShortConv(d_model, conv_size, activation=None)
        self.g_norm = RMSNorm(d_model, norm_eps)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, state=None, offset=0, mode=None):
        state, new = state or {}, {}
        q, f, i = fused_linear(x, self.q_proj, self.f_proj, self.i_proj)
        q, f, i = self.short_convs(state, new, q=q, f=f, i=i)
        q = F.silu(q)
        g = F.logsigmoid(at_least_fp32(f))
        k = 1 - g.exp()
        if k.dtype != i.dtype:
            k = k.to(i.dtype)
        q, k, g = (split_heads(t, self.expand_ratio) for t in (q, k, g))
        o, new["S"] = self.op("gla", mode, x.shape[1])(q, k, split_heads(i, self.head_i), g, initial_state=state.get("S"))
        return self.o_proj(self.g_norm(o.flatten(-2))), new

    def state_shapes(self, batch, seq_len):
        return {"S": (batch, self.n_heads, self.expand_ratio, self.head_i), **self.conv_state_shapes(batch)}

    def state_elements_per_head(self) -> int:
        return self.expand_ratio * self.head_i
