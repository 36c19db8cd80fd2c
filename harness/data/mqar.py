"""MQAR: Zoology's multi-query associative recall (Arora et al. 2023, `multiquery_ar`).

A sequence of length T is

    k_1 v_1 k_2 v_2 ... k_K v_K | noise ... k_i noise ... k_j noise ...
    '----- 2K tokens ---------'   '-------- T - 2K tokens ----------------'

Keys come from ``[1, V/2)``, values from ``[V/2, V)``, each drawn without replacement per
sequence. Every key is queried once after the key-value context: the query for pair i sits at
position ``2K + 2·gap_i``, where the gaps are drawn without replacement from ``0 .. (T-2K)/2 - 1``
with probability ``∝ alpha · x^(alpha-1)`` (x = gap + 1; a power law favouring short gaps, Zoology's
``power_a``). The target at a query position is the key's value (the model must emit it next);
every other position is ``IGNORE``. The token after a query is noise, never the answer, so
teacher forcing leaks nothing.

Deviation from Zoology: noise tokens are drawn from the whole vocabulary *minus this sequence's
keys and values* (Zoology draws from the whole vocabulary). So each key occurs exactly twice (its
pair and its query) and each value once (its pair): every key occurrence after the context is a
scored query, and the answer appears nowhere but in its pair.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from harness.data import IGNORE
from harness.data.cache import cached

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class MQARConfig:
    vocab_size: int = 256
    seq_len: int = 64
    num_kv_pairs: int = 8
    alpha: float = 0.01  # Zoology's power_a: the gap law is p(x) ∝ x^(alpha - 1)
    random_non_queries: bool = True  # noise between queries (False: token 0, as Zoology's option)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def key_range(self) -> tuple[int, int]:
        return 1, self.vocab_size // 2

    @property
    def value_range(self) -> tuple[int, int]:
        return self.vocab_size // 2, self.vocab_size

    @property
    def n_gaps(self) -> int:
        return (self.seq_len - 2 * self.num_kv_pairs) // 2

    def validate(self) -> None:
        """Raise ValueError if this configuration cannot generate sequences."""
        K, T, V = self.num_kv_pairs, self.seq_len, self.vocab_size
        if K < 1:
            raise ValueError(f"mqar: num_kv_pairs must be >= 1, got {K}")
        if T < 4 * K:
            raise ValueError(
                f"mqar: seq_len {T} is too short for {K} key-value pairs: the context takes 2K = {2 * K} "
                f"tokens and the K queries need at least 2K more (seq_len >= 4 * num_kv_pairs = {4 * K})"
            )
        lo, hi = self.key_range
        if hi - lo < K or self.vocab_size - hi < K:
            raise ValueError(
                f"mqar: vocab_size {V} is too small for {K} distinct keys and values "
                f"(keys use [1, V/2), values [V/2, V); need vocab_size >= {2 * K + 2})"
            )
        if not self.alpha > 0:
            raise ValueError(f"mqar: alpha must be > 0, got {self.alpha}")


def gap_probabilities(cfg: MQARConfig) -> torch.Tensor:
    """p(gap = x - 1) ∝ alpha · x^(alpha - 1), x = 1 .. n_gaps (Zoology)."""
    x = torch.arange(1, cfg.n_gaps + 1, dtype=torch.float64)
    p = cfg.alpha * x ** (cfg.alpha - 1)
    return p / p.sum()


def _choose_distinct(n: int, pool: int, k: int, g: torch.Generator) -> torch.Tensor:
    """[n, k] indices into range(pool), distinct per row, uniformly."""
    return torch.rand(n, pool, generator=g).argsort(dim=1)[:, :k]


def generate_mqar(cfg: MQARConfig, n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` sequences: inputs, targets (value at each query, IGNORE elsewhere), groups (query
    index at query positions, -1 elsewhere)."""
    cfg.validate()
    K, T, V = cfg.num_kv_pairs, cfg.seq_len, cfg.vocab_size
    g = torch.Generator().manual_seed(int(seed))
    k_lo, k_hi = cfg.key_range
    v_lo, v_hi = cfg.value_range
    keys = _choose_distinct(n, k_hi - k_lo, K, g) + k_lo
    values = _choose_distinct(n, v_hi - v_lo, K, g) + v_lo

    inputs = torch.zeros(n, T, dtype=torch.long)
    inputs[:, 0 : 2 * K : 2] = keys
    inputs[:, 1 : 2 * K : 2] = values
    if cfg.random_non_queries:
        # noise from the vocabulary minus this sequence's keys and values (rejection sampling)
        used = torch.zeros(n, V, dtype=torch.bool)
        used.scatter_(1, keys, True)
        used.scatter_(1, values, True)
        noise = torch.randint(0, V, (n, T - 2 * K), generator=g)
        bad = used.gather(1, noise)
        while bad.any():
            noise[bad] = torch.randint(0, V, (int(bad.sum()),), generator=g)
            bad = used.gather(1, noise)
        inputs[:, 2 * K :] = noise

    # distinct gaps with p ∝ power law: Gumbel-top-k = sequential sampling without replacement
    logp = gap_probabilities(cfg).log().float()
    u = torch.rand(n, cfg.n_gaps, generator=g).clamp_(1e-12, 1 - 1e-7)
    gaps = (logp - torch.log(-torch.log(u))).topk(K, dim=1).indices
    qpos = 2 * K + 2 * gaps  # [n, K]
    inputs.scatter_(1, qpos, keys)
    targets = torch.full((n, T), IGNORE, dtype=torch.long)
    targets.scatter_(1, qpos, values)
    groups = torch.full((n, T), -1, dtype=torch.long)
    groups.scatter_(1, qpos, torch.arange(K).expand(n, K).contiguous())
    return {"inputs": inputs, "targets": targets, "groups": groups}


def mqar_dataset(cfg: MQARConfig, n: int, seed: int, cache: bool = True) -> dict[str, torch.Tensor]:
    """`generate_mqar`, cached on disk under a hash of (config, n, version) and seed."""
    key = {**cfg.to_dict(), "n": int(n), "version": GENERATOR_VERSION}
    return cached("mqar", key, seed, lambda: generate_mqar(cfg, n, seed), enabled=cache)


def reference_levels(cfg: MQARConfig) -> tuple[float, float]:
    """(chance, plateau) of recall_acc. Chance: a uniform guess over the value tokens
    (1 / |[V/2, V)|, about 2/V), what a model scores before it has learned even the value range.
    Plateau: a uniform guess among the K values in this sequence's context (1/K), where models
    that know the answer is "one of the pair values" but cannot bind it to the key sit, often for
    many hundreds of steps. A score at or just above the plateau is not recall."""
    lo, hi = cfg.value_range
    return 1.0 / (hi - lo), 1.0 / cfg.num_kv_pairs


__all__ = ["MQARConfig", "generate_mqar", "mqar_dataset", "gap_probabilities", "reference_levels",
           "GENERATOR_VERSION"]
