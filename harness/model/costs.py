"""Analytic costs of a model: FLOPs per token, recurrent state and KV-cache bytes.

Nothing is allocated: the model is built on the `meta` device, so paper-sized shapes (340M, 1.3B)
cost nothing. Counting rules (1 FLOP = one multiply or one add, forward pass, per token):
- token mixers: the paper's Table 7 (harness.model.mixer.Mixer.flops_per_token): k * H * d_k * d_v
  for a matrix state (k = 5 RetNet and Mamba-2, 7 GLA/HGRN-2, 8 DeltaNet/GDN), 5 * d for HGRN,
  2 * L * d_model for softmax attention at context length L (2 * min(L, W) * d_model with a sliding
  window W: a query sees min(L, W) keys, and the KV cache holds min(L, W) tokens, as each mixer's
  `flops_per_token` and `state_spec` say); a head-wise hybrid layer (harness.model.headwise) counts
  its k attention heads (2 * L * k * head_dim) plus its linear variant. The mixers newer than the
  paper follow its increments: a per-channel data-dependent decay adds 2 passes over the state
  (GLA's 7 over RetNet's 5) and a rank-one correction of the state adds 3 (DeltaNet's 8 over 5), so
  KDA (per-channel gated delta rule) and RWKV-7 (per-channel decay + rank-one DPLR term) count
  k = 10; Mamba-2 is in the table at 5 (d_k = state_size N, d_v = head_dim P);
- everything else, for `model_flops_per_token`: every nn.Linear costs 2 * in * out (projections,
  gates, MLP, LM head), every short conv 2 * D * W; embeddings, norms and elementwise activations
  are not counted (they are O(d) per token).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from harness.model.config import ModelConfig
from harness.model.layout import ATTN
from harness.model.lm import HybridLM
from harness.model.mixer import KV, Mixer, spec_bytes
from harness.model.modules import ShortConv


def meta_model(cfg: ModelConfig) -> HybridLM:
    with torch.device("meta"):
        return HybridLM(cfg)


def dense_flops_per_token(model: nn.Module) -> int:
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += 2 * m.in_features * m.out_features
        elif isinstance(m, ShortConv):
            total += 2 * m.dim * m.kernel_size
    return total


def model_costs(
    cfg: ModelConfig, seq_len: int, batch: int = 1, dtype: torch.dtype = torch.float32
) -> list[dict]:
    """Rows {metric, value, unit} of the analytic costs of `cfg` at context length `seq_len`."""
    model = meta_model(cfg)
    mixers = [(kind, block.mixer) for kind, block in zip(model.kinds, model.layers)]
    mixer_flops = sum(m.flops_per_token(seq_len) for _, m in mixers)
    kv = sum(kv_bytes(m, batch, seq_len, dtype) for _, m in mixers)
    # everything else the cache holds: the linear mixers' states and the blocks' own tails
    state = model.expected_cache_bytes(batch, seq_len, dtype) - kv
    cache = state + kv
    if cfg.layout == "transformer" and cfg.window is None:
        transformer_cache = cache
    else:  # the baseline is the full-attention Transformer, whatever this model's window
        tf = meta_model(dataclasses.replace(cfg, layout="transformer", window=None))
        transformer_cache = tf.expected_cache_bytes(batch, seq_len, dtype)
    linear = next((m.linear_mixer for k, m in mixers if k != ATTN), None)  # a head-wise layer's: its branch
    attn = next(m for k, m in mixers if k == ATTN) if linear is None else None
    n_params = sum(p.numel() for p in model.parameters())
    rows = [
        ("mixer_flops_per_token", mixer_flops, "FLOP"),
        ("model_flops_per_token", mixer_flops + dense_flops_per_token(model), "FLOP"),
        ("state_bytes", state, "bytes"),
        ("kv_cache_bytes", kv, "bytes"),
        ("cache_bytes", cache, "bytes"),
        ("cache_reduction_vs_transformer", transformer_cache / cache if cache else float("nan"), "ratio"),
        ("n_params", n_params, "count"),
    ]
    # one layer's mixer: the linear variant's, or softmax's for a Transformer (paper Table 7)
    per_layer = (linear or attn).flops_per_token(seq_len)
    rows.append(("mixer_flops_per_token_per_layer", per_layer, "FLOP"))
    if linear is not None:
        rows.append(("analytic_crossover_len", crossover_length(cfg), "tokens"))
    return [{"metric": m, "value": float(v), "unit": u} for m, v, u in rows]


def kv_bytes(mixer: Mixer, batch: int, seq_len: int, dtype: torch.dtype) -> int:
    """Bytes of `mixer`'s state entries of role "kv" (softmax attention's keys and values, a
    head-wise hybrid's attention branch), by role, never by key name."""
    spec = mixer.state_spec(batch, seq_len)
    return spec_bytes({k: e for k, e in spec.items() if e.role == KV}, dtype, type(mixer).__name__)


def crossover_length(cfg: ModelConfig) -> float:
    """Analytic linear-vs-softmax crossover L* where 2 * L * d_attn equals the linear mixer's
    per-token FLOPs (paper §5.1: L* = k * d_model / (2H) when d_k = d_v = d_model / H). With a
    sliding window W the attention cost stops at L = W: no crossover (inf) when L* > W."""
    model = meta_model(dataclasses.replace(cfg, layout="pure", n_layers=1))
    attn = meta_model(dataclasses.replace(cfg, layout="transformer", n_layers=1)).layers[0].mixer
    per_unit_length = attn.flops_per_token(1)
    crossover = model.layers[0].mixer.flops_per_token(0) / per_unit_length
    return float("inf") if cfg.window is not None and crossover > cfg.window else crossover
