"""Softmax attention (the Transformer baseline and the "full" layers of a hybrid).
RoPE, optional GQA, a KV cache, computed with torch's scaled_dot_product_attention (which takes the
flash / memory-efficient kernels on GPU).

Sliding-window attention (`window=W`, ModelConfig.window; None = full attention): the query at
position t attends to the W keys at positions t - W + 1 .. t (itself included; fla's `window_size`
and flash-attn's `window_size=(W - 1, 0)`). The cache holds the last min(t, W) keys and values,
rotated at their absolute positions before they are cached, in order (oldest first), so its bytes
stop growing at the window. Each call returns a new cache (the last W of the old one and the new
tokens): no tensor of an earlier cache is written, so a cache can be branched, and the copy costs
what reading the W keys costs anyway."""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from harness.model.mixer import KV, Mixer, StateEntry
from harness.model.modules import rotary_pair, split_heads
from harness.registry import register_variant

#: Hugging Face Llama names -> fla's (the only renaming between the two)
_LLAMA_RENAMES = (
    (re.compile(r"^model\.embed_tokens\."), "model.embeddings."),
    (re.compile(r"^(model\.layers\.\d+)\.input_layernorm\."), r"\1.attn_norm."),
    (re.compile(r"^(model\.layers\.\d+)\.post_attention_layernorm\."), r"\1.mlp_norm."),
    (re.compile(r"^(model\.layers\.\d+)\.self_attn\."), r"\1.attn."),
)


@register_variant("attention")
class Attention(Mixer):
    # as a model every layer is softmax attention: the paper's Transformer baseline, drawn in black
    display_name = "Transformer"
    color = "#000000"
    generation = None
    state_kind = "kv"
    gating = "none"
    flops_coeff = 2  # 2 * L * d_model per token (paper Table 7)
    fla_model_types = ("transformer", "llama")  # fla's Transformer; a Hugging Face Llama

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk",
                 n_kv_heads: int | None = None, head_dim: int | None = None, qkv_bias: bool = False,
                 rope_theta: float = 10000.0, window: int | None = None):
        super().__init__(d_model, n_heads, layer_idx, mode)
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"attention: window must be a positive integer or None (full attention), got {window!r}")
        self.window = window
        self.n_kv_heads = n_kv_heads or n_heads
        if n_heads % self.n_kv_heads:
            raise ValueError(f"attention: n_heads={n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if head_dim is None and d_model % n_heads:
            raise ValueError(f"attention: d_model {d_model} must divide by n_heads={n_heads}")
        self.head_dim = head_dim or d_model // n_heads
        self.rope_theta = rope_theta
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        self.resolve_mode(mode)  # attention has one path; still reject typos
        B, T, _ = x.shape
        q, k, v = (split_heads(t, self.head_dim) for t in (self.q_proj(x), self.k_proj(x), self.v_proj(x)))
        q, k = rotary_pair(q, k, offset, self.rope_theta)  # absolute positions, before caching
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        past = 0
        if state:
            past = state["k"].shape[2]  # cached keys: absolute positions offset - past .. offset - 1
            k, v = torch.cat([state["k"], k], 2), torch.cat([state["v"], v], 2)
        if self.window is not None and past + 1 > self.window:  # keys no query of this call can see
            start = past + 1 - self.window
            k, v, past = k[:, :, start:], v[:, :, start:], past - start
        keep = k.shape[2] if self.window is None else min(k.shape[2], self.window)
        new = {"k": k[:, :, k.shape[2] - keep:], "v": v[:, :, v.shape[2] - keep:]}
        rep = self.n_heads // self.n_kv_heads
        kk, vv = (k, v) if rep == 1 else (k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1))
        # On CUDA too the window is a mask: this variant runs SDPA only (no fla / flash-attn kernel is
        # wired in for softmax attention, so there is no kernel window argument to pass); SDPA then
        # takes its memory-efficient or math kernel instead of flash.
        mask = self.attention_mask(past, T, x.device)
        if mask is None:
            o = F.scaled_dot_product_attention(q, kk, vv, is_causal=T > 1)
        else:
            o = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
        return self.o_proj(o.transpose(1, 2).flatten(-2)), new

    def attention_mask(self, past: int, T: int, device) -> torch.Tensor | None:
        """Which of the past + T keys each of the T queries sees ([T, past + T], True = attend):
        query i sits at key index past + i and sees keys j <= past + i, and with a window only
        j > past + i - window. None when plain causal masking (`is_causal`) says the same."""
        band = self.window is not None and past + T > self.window
        if past == 0 and not band:
            return None
        query = torch.arange(T, device=device)[:, None] + past
        key = torch.arange(past + T, device=device)[None, :]
        mask = key <= query
        return mask & (key > query - self.window) if band else mask

    def state_spec(self, batch, seq_len):
        held = seq_len if self.window is None else min(seq_len, self.window)  # the window bounds the cache
        shape = (batch, self.n_kv_heads, held, self.head_dim)
        return {"k": StateEntry(shape, KV), "v": StateEntry(shape, KV)}

    def state_elements_per_head(self) -> int:
        return 0

    def flops_per_token(self, seq_len: int) -> int:
        # causal QK^T plus AV: H * L * d_head multiplies and as many adds per token; with a window
        # a query sees min(L, W) keys, so L becomes min(L, W) (the same count when L <= W)
        keys = seq_len if self.window is None else min(seq_len, self.window)
        return self.flops_coeff * keys * self.n_heads * self.head_dim

    @classmethod
    def fla_config_fields(cls, cfg):
        """A whole Transformer: fla's `transformer` or a Hugging Face `llama`."""
        if cfg.model_type == "llama":
            if cfg.get("attention_bias") or cfg.get("mlp_bias"):
                raise cfg.unsupported("attention_bias / mlp_bias are not implemented (our o_proj and MLP have no bias)")
            rope = cfg.get("rope_parameters") or {}
            scaling = cfg.get("rope_scaling") or {}
            rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
            if rope_type != "default":
                raise cfg.unsupported(f"rope scaling {rope_type!r} is not implemented")
            heads = int(cfg.get("num_attention_heads"))
            head_dim = int(cfg.get("head_dim") or cfg.d_model // heads)
            fields = {"layout": "transformer", "n_heads": heads, "attn_heads": heads,
                      "attn_kv_heads": int(cfg.get("num_key_value_heads") or heads),
                      "rope_theta": float(rope.get("rope_theta") or cfg.get("rope_theta") or 10000.0),
                      "norm_eps": float(cfg.get("rms_norm_eps", 1e-6))}
            if head_dim * heads != cfg.d_model:
                fields["attn_kwargs"] = {"head_dim": head_dim}
            return fields
        cfg.require("qk_norm", ok=[False, None], default=False, why="no qk-norm in our attention")
        heads = int(cfg.get("num_heads", 32))
        fields = {"layout": "transformer", "n_heads": heads, "attn_heads": heads,
                  "attn_kv_heads": int(cfg.get("num_kv_heads") or heads),
                  "rope_theta": float(cfg.get("rope_theta") or 10000.0)}
        if cfg.get("window_size") is not None:  # fla: flash-attn window_size=(W - 1, 0), our window W
            fields["window"] = int(cfg.get("window_size"))
        if cfg.get("qkv_bias"):
            fields["attn_kwargs"] = {"qkv_bias": True}
        return fields

    @classmethod
    def fla_key(cls, key: str, model_type: str):
        if model_type == "llama":
            for pattern, repl in _LLAMA_RENAMES:
                key = pattern.sub(repl, key)
        return key
