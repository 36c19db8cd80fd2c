"""RWKV-7 "Goose" (Peng et al. 2025): the generalised delta rule with a per-channel decay and a
data-dependent in-context learning rate. Generation 3. After fla's RWKV7Attention:

    x_* = x + (x_{t-1} - x_t) * mu_*            token shift, one learned mix per input (r w k v a g)
    r, k, v = r_proj(x_r), k_proj(x_k), v_proj(x_v);  v mixed toward the first layer's v (v_first)
    w = -exp(-1/2) * sigmoid(w_lora(x_w))       log decay per key channel, in (-0.61, 0)
    a = sigmoid(a_lora(x_a));  kk = l2norm(k * k_k);  k = k * (1 + (a - 1) * k_a)
    S_t = Diag(exp(w_t)) S_{t-1} + (kk a)_t ((-kk)_t^T S_{t-1}) + k_t v_t^T,   o_t = S_t^T r_t
    out = o_proj((GroupNorm(o) + (r . (k * r_k)) v) * g_lora(x_g))

The recurrence is harness.ops.dplr with a = -kk, b = kk * a and scale 1 (fla's `chunk_rwkv7`).
The first RWKV-7 layer of a forward call hands its values to the later ones through the call's
`context` (Mixer.forward); as in fla, layer 0 has no `v_lora`, and a first RWKV-7 layer deeper
in a hybrid (attention below it) leaves its `v_lora` unused.
"""
from __future__ import annotations

import torch
from torch import nn

from harness.model.blocks import token_shift
from harness.model.mixer import CONV, MatrixStateMixer, StateEntry
from harness.model.modules import at_least_fp32, l2norm, split_heads
from harness.registry import register_variant

W_SCALE = 0.6065306597126334  # exp(-1/2): the log decay's bound, RWKV-7's -softplus(-z) - 1/2 rewritten


class LoRA(nn.Module):
    """fla's LoRA: Linear(in, rank) -> activation -> Linear(rank, out) (names lora.0 / lora.2)."""

    def __init__(self, d_in: int, d_out: int, rank: int, activation: str | None, bias: bool = True):
        super().__init__()
        act = {"tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), None: nn.Identity()}[activation]
        self.lora = nn.Sequential(nn.Linear(d_in, rank, bias=False), act, nn.Linear(rank, d_out, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora(x)


def _low_rank(d_model: int, head_dim: int, coeff: float, per_head: bool) -> int:
    """fla's default low-rank width: a multiple of 32, at least 32."""
    factor = head_dim / 64 if per_head else 1.0
    return max(32, int(round(coeff * d_model**0.5 * factor / 32) * 32))


@register_variant("rwkv7")
class RWKV7(MatrixStateMixer):
    display_name = "RWKV-7"
    color = "#e377c2"  # pink: generation 3
    generation = 3
    delta_rule = True
    gating = "data-dependent per-channel decay"
    # GLA's per-channel decay (7) plus a rank-one correction (+3), as KDA; see harness.model.costs
    flops_coeff = 10
    fla_op = "chunk_rwkv7"
    fla_model_types = ("rwkv7",)

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 head_dim: int | None = None, value_dim: int | None = None, decay_low_rank_dim: int | None = None,
                 gate_low_rank_dim: int | None = None, a_low_rank_dim: int | None = None,
                 v_low_rank_dim: int | None = None, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, layer_idx, mode)
        K = head_dim or d_model // n_heads
        value_dim = value_dim or d_model
        if d_model % K or d_model // K != n_heads or value_dim % n_heads:
            raise ValueError(f"rwkv7: d_model {d_model} must be n_heads={n_heads} heads of head_dim {K}, and "
                             f"value_dim {value_dim} divide by n_heads")
        self.set_dims(d_model, value_dim)  # head_k = K
        C = d_model
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, C)))
        self.k_k, self.k_a = nn.Parameter(torch.zeros(C)), nn.Parameter(torch.zeros(C))
        self.r_k = nn.Parameter(torch.zeros(n_heads, K))
        self.r_proj = nn.Linear(C, C, bias=False)
        self.k_proj = nn.Linear(C, C, bias=False)
        self.v_proj = nn.Linear(C, value_dim, bias=False)
        self.o_proj = nn.Linear(value_dim, C, bias=False)
        self.w_lora = LoRA(C, C, decay_low_rank_dim or _low_rank(C, K, 2.5, True), "tanh")
        self.a_lora = LoRA(C, C, a_low_rank_dim or _low_rank(C, K, 2.5, True), None)
        if layer_idx != 0:
            self.v_lora = LoRA(C, value_dim, v_low_rank_dim or _low_rank(C, K, 1.7, True), None)
        self.g_lora = LoRA(C, value_dim, gate_low_rank_dim or _low_rank(C, K, 5.0, False), "sigmoid", bias=False)
        self.g_norm = nn.GroupNorm(n_heads, value_dim, eps=K * norm_eps, affine=True)

    def init_parameters(self, n_layers: int) -> None:
        """fla's initialisation of the token-shift mixes, key and bonus scales, LoRA biases (the
        decay spectrum) and norm, for a model of `n_layers`: they depend on the depth, and the
        model's Linear init zeroes the biases (Mixer.init_parameters)."""
        C, K, i, L = self.d_model, self.head_k, self.layer_idx, max(n_layers, 2)
        depth_0_to_1, depth_1_to_0 = i / (L - 1), 1.0 - i / L
        n = torch.arange(C, dtype=torch.float64)
        linear = n / (C - 1) - 0.5
        zigzag = ((n % K) - (K - 1) / 2) / ((K - 1) / 2)
        zigzag = zigzag * zigzag.abs()
        www = -6 + 6 * (n / (C - 1)) ** (1 + depth_0_to_1**0.3)
        ddd = (n / C).view(1, 1, C)
        for name, power in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
            getattr(self, name).copy_(1.0 - ddd ** (power * depth_1_to_0))
        self.k_a.fill_(1.02)
        self.r_k.fill_(-0.04)
        self.k_k.copy_(0.71 - linear * 0.1)
        self.w_lora.lora[2].bias.copy_(www + 0.5 + zigzag * 2.5)
        self.a_lora.lora[2].bias.copy_(-0.19 + zigzag * 0.3 + linear * 0.4)
        if hasattr(self, "v_lora"):
            self.v_lora.lora[2].bias.copy_(0.73 - linear[: self.value_dim] * 0.4 if self.value_dim <= C
                                           else torch.full((self.value_dim,), 0.73))
        self.g_norm.weight.fill_(((i + 1) / L) ** 0.7)

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        state, new = state or {}, {}
        context = {} if context is None else context
        delta, new["shift"] = token_shift(x, state.get("shift"))  # [B, T, C], [B, C]
        xr, xw, xk, xv, xa, xg = (torch.addcmul(x, delta, mix) for mix in
                                  (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r, k, v = self.r_proj(xr), self.k_proj(xk), self.v_proj(xv)
        w = -W_SCALE * torch.sigmoid(at_least_fp32(self.w_lora(xw)))
        if "v_first" in context:  # a later layer: v leans toward the first layer's values
            v = torch.lerp(v, context["v_first"], torch.sigmoid(self.v_lora(xv)))
        else:
            context["v_first"] = v
        a = torch.sigmoid(self.a_lora(xa))
        kk = l2norm(split_heads(k * self.k_k, self.head_k))  # [B, T, H, K]
        k = k * (1 + (a - 1) * self.k_a)
        r, w, k, a = (split_heads(t, self.head_k) for t in (r, w, k, a))  # [B, T, H, K]
        v = split_heads(v, self.head_v)  # [B, T, H, V]
        o, new["S"] = self.op("dplr", mode, x.shape[1])(r, k, v, -kk, kk * a, w, scale=1.0,
                                                        initial_state=state.get("S"))
        B, T = x.shape[:2]
        o = self.g_norm(o.reshape(B * T, self.value_dim)).view(B, T, self.value_dim)
        bonus = ((r * k * self.r_k).sum(-1, keepdim=True) * v).flatten(-2)  # [B, T, value_dim]
        return self.o_proj((o + bonus) * self.g_lora(xg)), new

    def state_spec(self, batch, seq_len):
        return {**super().state_spec(batch, seq_len), "shift": StateEntry((batch, self.d_model), CONV)}

    @classmethod
    def fla_config_fields(cls, cfg):
        cfg.require("norm_first", ok=[True], default=True, why="layer 0 LayerNorms the embeddings first (pre_norm)")
        cfg.require("norm_bias", ok=[True], default=True, why="our LayerNorms have a bias")
        cfg.require("hidden_act", ok=["sqrelu"], default="sqrelu", why="the channel mix is a squared ReLU")
        d = cfg.d_model
        head_dim = int(cfg.get("head_dim", 64))
        heads = int(cfg.get("num_heads") or d // head_dim)
        value_dim = cfg.get("value_dim")
        if isinstance(value_dim, list):
            if len(set(value_dim)) != 1:
                raise cfg.unsupported(f"value_dim={value_dim} differs between layers")
            value_dim = value_dim[0]
        inter = cfg.get("intermediate_size")
        if inter is None:  # fla's RWKV7FeedForward: hidden_ratio * d rounded up to a multiple of 32
            inter = 32 * -(-int(d * (cfg.get("hidden_ratio") or 4)) // 32)
        low = {f"{p}_low_rank_dim": cfg.get(f"{p}_low_rank_dim") for p in ("decay", "gate", "a", "v")}
        return {"n_heads": heads, "block": "rwkv", **cfg.mlp_hidden_fields(int(inter)), "mixer_kwargs": {
            "head_dim": head_dim, "value_dim": None if value_dim in (None, d) else int(value_dim),
            **{k: int(v) for k, v in low.items() if v is not None}, "norm_eps": cfg.norm_eps}}

    @classmethod
    def fla_key(cls, key: str, model_type: str) -> str:
        # fla's RWKV7 block names its channel mix `ffn` (`ffn_norm`); ours is the block's `mlp`
        return key.replace(".ffn_norm.", ".mlp_norm.").replace(".ffn.", ".mlp.")
