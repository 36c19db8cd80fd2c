"""HGRN-2 (Qin et al. 2024): state expansion with a tied gate, the forget gate a_t also gives the
key (1 - a_t). Generation 2. After fla's HGRN2Attention (runs on the GLA op).

Deviation: fla's HGRN2 model adds a learned depth-increasing lower bound on the forget gate of
layers > 0 (a model-level parameter); here every layer uses the layer-0 form (no lower bound).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.model.mixer import MatrixStateMixer
from harness.model.modules import RMSNorm, at_least_fp32, split_heads
from harness.registry import register_variant


@register_variant("hgrn2")
class HGRN2(MatrixStateMixer):
    display_name = "HGRN-2"
    color = "#2ca02c"  # green: generation 2, tied gating
    generation = 2
    gating = "data-dependent per-channel decay, tied to the key"
    flops_coeff = 7
    fla_op = "chunk_gla"
    fla_model_types = ("hgrn2",)
    fla_dropped_note = ("fla's HGRN-2 forget-gate lower bounds (model.lower_bounds) were dropped: our HGRN-2 has no "
                        "model-level lower bound, so layers > 0 differ from the checkpoint")

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 expand_ratio: int | None = None, use_short_conv: bool = False, conv_size: int = 4,
                 norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        if d_model % n_heads:
            raise ValueError(f"hgrn2: d_model {d_model} must divide by n_heads={n_heads}")
        # fla: expand_ratio is the per-head forget (key) dim; default d_model // n_heads
        self.expand_ratio = expand_ratio or d_model // n_heads
        self.set_dims(n_heads * self.expand_ratio, d_model)
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.f_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.i_proj = nn.Linear(d_model, d_model, bias=False)
        if use_short_conv:
            self.declare_short_convs(conv_size, activation=None, q=self.key_dim, f=self.key_dim, i=d_model)
        self.g_norm = RMSNorm(d_model, norm_eps)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        state, new = state or {}, {}
        q, f, i = self.short_convs(state, new, q=self.q_proj(x), f=self.f_proj(x), i=self.i_proj(x))
        q = F.silu(q)
        g = F.logsigmoid(at_least_fp32(f))
        k = 1 - g.exp()
        if k.dtype != i.dtype:
            k = k.to(i.dtype)
        q, k, g = (split_heads(t, self.head_k) for t in (q, k, g))
        o, new["S"] = self.op("gla", mode, x.shape[1])(q, k, split_heads(i, self.head_v), g,
                                                       initial_state=state.get("S"))
        return self.o_proj(self.g_norm(o.flatten(-2))), new

    @classmethod
    def fla_config_fields(cls, cfg):
        ratio = cfg.get("expand_ratio", 128)
        if ratio:
            heads = cfg.d_model // int(ratio)
        elif cfg.get("num_heads"):
            heads = int(cfg.get("num_heads"))
            ratio = cfg.d_model // heads
        else:
            raise cfg.unsupported("one of expand_ratio / num_heads must be set")
        # fla 0.6's HGRN2Attention applies g_norm through the fused rms_norm_linear, whose eps is
        # its default 1e-5 whatever norm_eps says (g_norm.eps is never read)
        return {"n_heads": heads, "mixer_kwargs": {
            "expand_ratio": int(ratio), "use_short_conv": bool(cfg.get("use_short_conv", False)),
            "conv_size": int(cfg.get("conv_size", 4)), "norm_eps": 1e-5}}

    @classmethod
    def fla_key(cls, key: str, model_type: str):
        return None if key.split(".")[-1] == "lower_bounds" else key  # see fla_dropped_note
