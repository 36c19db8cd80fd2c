"""HGRN (Qin et al. 2023): gated vector recurrence, generation 1. After fla's HGRNAttention.

Deviation: fla's HGRN model adds a learned, depth-increasing lower bound on the forget gate of
layers > 0 (a model-level parameter); here every layer uses the layer-0 form (no lower bound).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.model.mixer import RECURRENT, Mixer, StateEntry
from harness.model.modules import GatedRMSNorm, at_least_fp32
from harness.registry import register_variant


@register_variant("hgrn")
class HGRN(Mixer):
    display_name = "HGRN"
    color = "#8c564b"  # brown: generation 1
    generation = 1
    state_kind = "vector"
    gating = "data-dependent per-channel forget gate"
    flops_coeff = 5
    fla_op = "fused_recurrent_hgrn"
    fla_model_types = ("hgrn",)
    fla_dropped_note = ("fla's HGRN forget-gate lower bounds (model.lower_bounds) were dropped: our HGRN has no "
                        "model-level lower bound, so layers > 0 differ from the checkpoint")

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 expand_ratio: float = 1, use_short_conv: bool = False, conv_size: int = 4,
                 norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        self.input_dim = int(d_model * expand_ratio)
        self.i_proj = nn.Linear(d_model, self.input_dim, bias=False)
        self.f_proj = nn.Linear(d_model, self.input_dim, bias=False)
        self.g_proj = nn.Linear(d_model, self.input_dim, bias=False)
        if use_short_conv:
            self.declare_short_convs(conv_size, activation=None, i=self.input_dim, f=self.input_dim)
        self.g_norm = GatedRMSNorm(self.input_dim, norm_eps)
        self.o_proj = nn.Linear(self.input_dim, d_model, bias=False)

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        state, new = state or {}, {}
        i, f = self.short_convs(state, new, i=self.i_proj(x), f=self.f_proj(x))
        f = F.logsigmoid(at_least_fp32(f))
        i = F.silu(i) * (1 - f.exp())  # input gate tied to the forget gate
        o, new["h"] = self.op("hgrn", mode, x.shape[1])(i, f, state.get("h"))
        o = self.g_norm(o if o.dtype == x.dtype else o.to(x.dtype), self.g_proj(x))
        return self.o_proj(o), new

    def state_spec(self, batch, seq_len):
        return {"h": StateEntry((batch, self.input_dim), RECURRENT), **self.conv_state_spec(batch)}

    @property
    def n_heads_state(self) -> int:
        return 1  # one vector state; the paper counts HGRN with H = 1

    def state_elements_per_head(self) -> int:
        return self.input_dim

    @classmethod
    def fla_config_fields(cls, cfg):
        return {"n_heads": 1, "mixer_kwargs": {  # one vector state: n_heads is unused by the mixer
            "expand_ratio": cfg.get("expand_ratio", 1) or 1, "use_short_conv": bool(cfg.get("use_short_conv", False)),
            "conv_size": int(cfg.get("conv_size", 4)), "norm_eps": cfg.norm_eps}}

    @classmethod
    def fla_key(cls, key: str, model_type: str):
        return None if key.split(".")[-1] == "lower_bounds" else key  # see fla_dropped_note
