"""The residual block around each token mixer (`ModelConfig.block`), as fla's models build it.

    "standard"  x = x + mixer(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x))
                fla's block for every model but two (GLA, GDN, KDA, ..., the Transformer)
    "mamba"     x = x + mixer(RMSNorm(x))
                fla's Mamba2Block: no MLP
    "rwkv"      x = x + mixer(LayerNorm(x));  x = x + channel_mix(LayerNorm(x))
                fla's RWKV7Block: LayerNorms with bias, RWKV-7's channel mix (token shift,
                squared ReLU), and on layer 0 a LayerNorm of the embeddings first (`pre_norm`)

Every block of a model has the same style, whatever its mixer (a hybrid's attention layers too,
as in fla's hybrid models); the model's final norm is the style's norm. Sweeps keep "standard"
for every variant, so that only the mixer differs between cells, as in the paper; checkpoint
conversion picks the style of the fla model it reads.

Parameter names are fla's, so checkpoints map one-to-one: `attn_norm`, `mixer` (fla's `attn`),
`mlp_norm` (`ffn_norm` in RWKV-7), `mlp` (`ffn`), `pre_norm`. A block's state is its mixer's
plus its channel mix's token-shift tail (`ffn_shift`, [B, d_model], role "conv"); every mixer gets
the forward call's `context`, where a mixer leaves values for the layers above it (RWKV-7's v_first).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.model.config import ModelConfig
from harness.model.mixer import CONV, Mixer, State, StateEntry, spec_bytes
from harness.model.modules import RMSNorm, SwiGLU


def token_shift(x: torch.Tensor, last: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """RWKV's token shift: (x_{t-1} - x_t for every t, the last x) for x [B, T, C]; x_{-1} is
    `last` ([B, C], the previous call's last token) or zeros at the start of a sequence."""
    prev = x.new_zeros(x[:, :1].shape) if last is None else last.unsqueeze(1).to(x.dtype)  # [B, 1, C]
    shifted = torch.cat([prev, x[:, :-1]], 1)  # [B, T, C]
    return shifted - x, x[:, -1]


class RWKV7ChannelMix(nn.Module):
    """fla's RWKV7FeedForward: value(relu(key(x + (x_{t-1} - x_t) * x_k)) ** 2)."""

    def __init__(self, d_model: int, hidden: int, layer_idx: int = 0, n_layers: int = 1):
        super().__init__()
        depth = 1.0 - layer_idx / n_layers  # fla's x_k: from 1 - c/C on the first layer to ~0 on the last
        self.x_k = nn.Parameter(1.0 - (torch.arange(d_model) / d_model) ** (depth**4))
        self.key = nn.Linear(d_model, hidden, bias=False)
        self.value = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor, last: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        delta, last = token_shift(x, last)
        return self.value(F.relu(self.key(torch.addcmul(x, delta, self.x_k))) ** 2), last


def make_norm(style: str, d_model: int, eps: float) -> nn.Module:
    """The block style's norm: LayerNorm with bias for "rwkv", else fla's RMSNorm."""
    return nn.LayerNorm(d_model, eps=eps) if style == "rwkv" else RMSNorm(d_model, eps)


class Block(nn.Module):
    def __init__(self, mixer: Mixer, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        style, d = cfg.block, cfg.d_model
        self.style = style
        if style == "rwkv" and layer_idx == 0:
            self.pre_norm = make_norm(style, d, cfg.norm_eps)
        self.attn_norm = make_norm(style, d, cfg.norm_eps)
        self.mixer = mixer
        if style != "mamba":
            self.mlp_norm = make_norm(style, d, cfg.norm_eps)
            self.mlp = (SwiGLU(d, cfg.mlp_hidden) if style == "standard"
                        else RWKV7ChannelMix(d, cfg.mlp_hidden, layer_idx, cfg.n_layers))

    def forward(self, x: torch.Tensor, state: State | None = None, offset: int = 0, mode: str | None = None,
                context: dict | None = None) -> tuple[torch.Tensor, State]:
        if hasattr(self, "pre_norm"):
            x = self.pre_norm(x)
        context = {} if context is None else context
        h, new_state = self.mixer(self.attn_norm(x), state, offset, mode, context=context)
        x = x + h
        if self.style == "mamba":
            return x, new_state
        if self.style == "rwkv":
            y, new_state["ffn_shift"] = self.mlp(self.mlp_norm(x), (state or {}).get("ffn_shift"))
            return x + y, new_state
        return x + self.mlp(self.mlp_norm(x)), new_state

    def state_spec(self, batch: int, seq_len: int) -> dict[str, StateEntry]:
        """The mixer's state entries and the channel mix's token-shift tail."""
        spec = dict(self.mixer.state_spec(batch, seq_len))
        if self.style == "rwkv":
            spec["ffn_shift"] = StateEntry((batch, self.mixer.d_model), CONV)
        return spec

    def state_bytes(self, batch: int = 1, seq_len: int = 0, dtype: torch.dtype = torch.float32) -> int:
        return spec_bytes(self.state_spec(batch, seq_len), dtype, type(self.mixer).__name__)
