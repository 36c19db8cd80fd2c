"""Mamba-2 (Dao & Gu 2024): a selective state space model with a data-dependent scalar decay per
head. Generation 2. After fla's Mamba2 layer (mamba_ssm's parameterisation):

    [z | xBC | dt] = in_proj(x);  x, B, C = split(SiLU(conv1d(xBC)))       (causal depthwise conv, bias)
    dt = softplus(dt + dt_bias);  A = -exp(A_log)
    S_t = exp(dt_t A) S_{t-1} + B_t (dt_t x_t)^T;  y_t = S_t^T C_t + D * x_t      (S [N, P] per head)
    out = out_proj(RMSNorm_grouped(y * SiLU(z)))

That is linear attention with a scalar decay, so the existing op serves: harness.ops.gla with
q = C, k = B, v = dt * x, g = dt * A and scale 1 (fla's `chunk_simple_gla` on CUDA), plus the D
skip. B and C are shared by the heads of a group (n_groups); head h reads group h // (H / G), as
mamba_ssm's kernels and fla's decode path do (fla's pure-torch prefill tiles the groups instead,
h % G, which disagrees with both for n_groups > 1). The width of the model is `expand * d_model`,
split over `n_heads` heads of P = expand * d_model / n_heads channels; `state_size` is N.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.model.mixer import MatrixStateMixer
from harness.model.modules import at_least_fp32, init_dt_bias, split_heads
from harness.registry import register_variant


class GroupedGatedRMSNorm(nn.Module):
    """mamba_ssm's RMSNormGated with norm_before_gate=False: RMSNorm over groups of `group_size`
    channels of x * SiLU(z), times a weight [dim]."""

    def __init__(self, dim: int, group_size: int, eps: float):
        super().__init__()
        self.group_size, self.eps = group_size, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = at_least_fp32(x) * F.silu(at_least_fp32(z))
        groups = y.unflatten(-1, (-1, self.group_size))  # [..., G, dim / G]
        y = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        return (y * self.weight.to(y.dtype)).to(x.dtype)


@register_variant("mamba2")
class Mamba2(MatrixStateMixer):
    display_name = "Mamba-2"
    color = "#17becf"  # cyan: generation 2, scalar data-dependent decay
    generation = 2
    gating = "data-dependent per-head scalar decay"
    flops_coeff = 5  # Table 7 lists Mamba-2 at 5
    fla_op = "chunk_simple_gla"
    fla_model_types = ("mamba2",)

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk", expand: int = 2,
                 state_size: int = 64, n_groups: int = 1, conv_size: int = 4, use_conv_bias: bool = True,
                 use_bias: bool = False, D_has_hdim: bool = False, rmsnorm: bool = True,
                 dt_limit: tuple[float, float] | None = None, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        inner = int(expand * d_model)
        if inner % n_heads or n_heads % n_groups:
            raise ValueError(f"mamba2: expand * d_model = {inner} must divide by n_heads={n_heads}, and n_heads by "
                             f"n_groups={n_groups}")
        self.set_dims(n_heads * state_size, inner)  # S [B, H, N, P]: head_k = N, head_v = P
        self.inner, self.n_groups, self.state_size = inner, n_groups, state_size
        self.dt_limit = None if dt_limit is None else tuple(float(t) for t in dt_limit)  # clamp dt; None: no clamp
        conv_dim = inner + 2 * n_groups * state_size
        self.in_proj = nn.Linear(d_model, inner + conv_dim + n_heads, bias=use_bias)  # [z | xBC | dt]
        self.declare_short_convs(conv_size, bias=use_conv_bias, xbc=conv_dim)  # fla's `conv1d`
        self.dt_bias = nn.Parameter(init_dt_bias(n_heads))  # fla's (mamba_ssm's) initialisation
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(1, 16).log())
        self.D = nn.Parameter(torch.ones(inner if D_has_hdim else n_heads))
        self.norm = GroupedGatedRMSNorm(inner, inner // n_groups, norm_eps) if rmsnorm else None
        self.out_proj = nn.Linear(inner, d_model, bias=use_bias)

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        state, new = state or {}, {}
        H, P, N, G = self.n_heads, self.head_v, self.state_size, self.n_groups
        z, xbc, dt = self.in_proj(x).split([self.inner, self.inner + 2 * G * N, H], -1)
        (xbc,) = self.short_convs(state, new, xbc=xbc)
        xs, Bm, Cm = xbc.split([self.inner, G * N, G * N], -1)
        xs = split_heads(xs, P)  # [B, T, H, P]
        Bm, Cm = (split_heads(t, N).repeat_interleave(H // G, dim=2) for t in (Bm, Cm))  # [B, T, H, N]
        dt = F.softplus(at_least_fp32(dt) + self.dt_bias)  # [B, T, H]
        if self.dt_limit is not None:
            dt = dt.clamp(*self.dt_limit)
        g = dt * -at_least_fp32(self.A_log).exp()  # log decay per head and step
        v = (at_least_fp32(xs) * dt[..., None]).to(xs.dtype)
        o, new["S"] = self.op("gla", mode, x.shape[1])(Cm, Bm, v, g, scale=1.0, initial_state=state.get("S"))
        D = self.D.view(H, P) if self.D.numel() == self.inner else self.D[:, None]
        y = (o + xs * D.to(xs.dtype)).flatten(-2)  # [B, T, inner]
        y = self.norm(y, z) if self.norm is not None else y * F.silu(z)
        return self.out_proj(y), new

    @classmethod
    def fla_config_fields(cls, cfg):
        cfg.require("hidden_act", ok=["silu", "swish"], default="silu", why="the conv activation is SiLU")
        cfg.require("norm_before_gate", ok=[False], default=False, why="the gated norm gates before it normalises")
        d, head_dim, expand = cfg.d_model, int(cfg.get("head_dim", 64)), int(cfg.get("expand", 2))
        if (expand * d) % head_dim:
            raise cfg.unsupported(f"expand * hidden_size = {expand * d} does not divide by head_dim={head_dim}")
        # transformers writes a non-finite float in config.json as {"__float__": "Infinity"}
        limit = [float(t["__float__"] if isinstance(t, dict) else t) for t in cfg.get("dt_limit", (0.0, float("inf")))]
        return {"n_heads": expand * d // head_dim, "block": "mamba", "mixer_kwargs": {
            "expand": expand, "state_size": int(cfg.get("state_size", 128)), "n_groups": int(cfg.get("n_groups", 1)),
            "conv_size": int(cfg.get("conv_kernel", 4)), "use_conv_bias": bool(cfg.get("use_conv_bias", True)),
            "use_bias": bool(cfg.get("use_bias", False)), "D_has_hdim": bool(cfg.get("D_has_hdim", False)),
            "rmsnorm": bool(cfg.get("rmsnorm", True)),
            "dt_limit": None if limit == [0.0, float("inf")] else limit, "norm_eps": cfg.norm_eps}}

    @classmethod
    def fla_key(cls, key: str, model_type: str) -> str:
        # fla's Mamba2ForCausalLM keeps mamba_ssm's names: backbone.*, a block norm `norm`, `norm_f`
        key = key.replace("backbone.embedding.", "backbone.embeddings.")  # mamba_ssm's older name
        if key.startswith("backbone."):
            key = "model." + key[len("backbone."):]
        key = key.replace(".mixer.", ".attn.").replace("model.norm_f.", "model.norm.")
        parts = key.split(".")
        if len(parts) == 5 and parts[1] == "layers" and parts[3] == "norm":  # model.layers.i.norm.weight
            key = ".".join([*parts[:3], "attn_norm", parts[4]])
        return key

    @classmethod
    def fla_mixer_param(cls, name: str) -> str:
        return "xbc_" + name if name.startswith("conv1d.") else name
