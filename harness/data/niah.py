"""RULER-style needle-in-a-haystack (Hsieh et al. 2024) at token level, with the "noise" haystack.

RULER's NIAH tasks hide "One of the special magic numbers for {key} is: {value}." sentences (the
needles) in a haystack and ask "What is the special magic number for {key}?" at the end. Its
"noise" haystack is one filler paragraph ("The grass is green. The sky is blue. ...") repeated.
Here everything is tokens of a small vocabulary:

    needle:  NEEDLE k_1..k_kl IS v_1..v_vl SEP
    query:   QUERY  k_1..k_kl ANSWER v_1..v_vl                   (the model must emit the v's)
    haystack ("repeat"): filler tokens 0..n_filler-1 in order, repeated; needles go in at
             sentence boundaries (every ``sentence_len`` filler tokens), as RULER inserts
             between sentences. ("random": i.i.d. filler tokens, needles anywhere.)

Subtasks (RULER's names; ``n_needles`` etc. are `NIAHConfig` fields):
- ``single``: one needle, its key is asked.
- ``multikey``: ``n_needles`` needles with distinct keys; one of them is asked.
- ``multiquery``: ``n_needles`` needles; ``n_queries`` of their keys are asked, one query each
  (``QUERY k ANSWER v .. QUERY k' ANSWER v' ..``).
- ``multivalue``: ``n_values`` needles share one key; the answer lists every value, in the order
  the needles appear, separated by SEP (``QUERY k ANSWER v .. SEP v' .. SEP ...``).

Layout: ``key_next_to_value`` (default False here, True in the `niah` task's defaults) writes the
needle as ``NEEDLE IS k_1..k_kl v_1..v_vl SEP`` and the query as ``QUERY ANSWER k_1..k_kl`` (then
the values), with the same lengths: the key sits right before its value, so finding the answer is
one induction step (as in MQAR). With RULER's order the value sits after IS in the needle but
right after ANSWER in the query; small Transformers did not learn that binding within 2,000 steps
(issue 21, docs/training.md#niah-defaults).

Needle depth: ``depth`` in [0, 1] puts every needle at that fraction of the haystack (as one
group, in random order); ``None`` draws each needle's depth from RULER's grid of 40 evenly
spaced depths.

Scoring: every value (``value_len`` tokens) is one answer *group*; it is right when all its
tokens are the model's argmax under teacher forcing, which is exactly when greedy decoding would
emit it. A sequence's score is the fraction of its groups that are right (RULER's
``string_match_all`` for multi-value answers). Keys are distinct within a sequence and every value
token is distinct within a sequence, so each answer is determined by exactly one needle.
Targets are set only at positions whose next token is a value token of the answer section; the
token at a scored position is never its own answer, and causal models see the answer tokens only
in the needle.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import torch

from harness.data import IGNORE
from harness.data.cache import cached

GENERATOR_VERSION = 1
SUBTASKS = ("single", "multikey", "multiquery", "multivalue")
HAYSTACKS = ("repeat", "random")

# special tokens
PAD, NEEDLE, IS, QUERY, ANSWER, SEP = 0, 1, 2, 3, 4, 5
N_SPECIAL = 8
#: RULER's needle depths: 40 evenly spaced points from 0% to 100%
DEPTH_GRID = tuple(i / 39 for i in range(40))


@dataclass(frozen=True)
class NIAHConfig:
    vocab_size: int = 256
    seq_len: int = 128
    subtask: str = "single"
    key_len: int = 1
    value_len: int = 2
    n_needles: int = 4  # multikey, multiquery (RULER: 4)
    n_queries: int = 2  # multiquery, <= n_needles (RULER: 4)
    n_values: int = 2  # multivalue (RULER: 4)
    depth: float | None = None  # None: each needle's depth from DEPTH_GRID
    haystack: str = "repeat"
    n_filler: int = 16
    sentence_len: int = 4
    #: False: RULER's order, needle ``NEEDLE k IS v SEP``, query ``QUERY k ANSWER v``. True: the key
    #: right before its value, needle ``NEEDLE IS k v SEP``, query ``QUERY ANSWER k v`` (same
    #: lengths), so the lookup is one induction step (find the key, copy the token after it) as in
    #: MQAR; with RULER's order the value sits two tokens after its key but the query's answer one
    #: token after it, and small models stayed on the copy-any-needle plateau (issue 21)
    key_next_to_value: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # vocabulary: specials | filler | keys | values
    @property
    def filler_range(self) -> tuple[int, int]:
        return N_SPECIAL, N_SPECIAL + self.n_filler

    @property
    def key_range(self) -> tuple[int, int]:
        lo = N_SPECIAL + self.n_filler
        return lo, lo + (self.vocab_size - lo) // 2

    @property
    def value_range(self) -> tuple[int, int]:
        return self.key_range[1], self.vocab_size

    @property
    def needles(self) -> int:
        return {"single": 1, "multikey": self.n_needles, "multiquery": self.n_needles,
                "multivalue": self.n_values}[self.subtask]

    def reference_levels(self) -> tuple[float, float]:
        """(chance, plateau) of recall_acc for this subtask. Chance: every token of a value guessed
        uniformly over the value tokens, (1 / n_value_tokens) ** value_len. Plateau: a value copied
        from a uniformly chosen needle of the context (1 / needles); with one needle (single)
        copying it is the task, so there the plateau is chance."""
        lo, hi = self.value_range
        chance = (1.0 / (hi - lo)) ** self.value_len
        return chance, (1.0 / self.needles if self.needles > 1 else chance)

    @property
    def n_keys(self) -> int:
        return 1 if self.subtask in ("single", "multivalue") else self.n_needles

    @property
    def needle_tokens(self) -> int:
        return self.needles * (self.key_len + self.value_len + 3)

    @property
    def query_tokens(self) -> int:
        one = self.key_len + 2
        if self.subtask == "multiquery":
            return self.n_queries * (one + self.value_len)
        if self.subtask == "multivalue":
            return one + self.n_values * self.value_len + (self.n_values - 1)
        return one + self.value_len

    @property
    def haystack_len(self) -> int:
        return self.seq_len - self.needle_tokens - self.query_tokens

    def validate(self) -> None:
        if self.subtask not in SUBTASKS:
            raise ValueError(f"niah: unknown subtask {self.subtask!r}; choose from {', '.join(SUBTASKS)}")
        if self.haystack not in HAYSTACKS:
            raise ValueError(f"niah: unknown haystack {self.haystack!r}; choose from {', '.join(HAYSTACKS)}")
        for name in ("key_len", "value_len", "n_needles", "n_queries", "n_values", "n_filler", "sentence_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"niah: {name} must be >= 1, got {getattr(self, name)}")
        if self.subtask == "multiquery" and self.n_queries > self.n_needles:
            raise ValueError(f"niah: n_queries ({self.n_queries}) cannot exceed n_needles ({self.n_needles})")
        if self.depth is not None and not 0.0 <= self.depth <= 1.0:
            raise ValueError(f"niah: depth must be in [0, 1] or null, got {self.depth}")
        k_lo, k_hi = self.key_range
        v_lo, v_hi = self.value_range
        need_k = self.n_keys * self.key_len
        need_v = self.needles * self.value_len
        if k_hi - k_lo < need_k or v_hi - v_lo < need_v:
            raise ValueError(
                f"niah: vocab_size {self.vocab_size} is too small for {self.subtask}: after {N_SPECIAL} special and "
                f"{self.n_filler} filler tokens it has {k_hi - k_lo} key and {v_hi - v_lo} value tokens, but a "
                f"sequence needs {need_k} distinct key tokens and {need_v} distinct value tokens"
            )
        if self.haystack_len < self.sentence_len:
            raise ValueError(
                f"niah {self.subtask}: seq_len {self.seq_len} leaves a haystack of {self.haystack_len} tokens "
                f"({self.needle_tokens} needle and {self.query_tokens} query tokens); need at least "
                f"{self.sentence_len} (seq_len >= {self.needle_tokens + self.query_tokens + self.sentence_len})"
            )


def _haystack(cfg: NIAHConfig, rng: random.Random) -> tuple[list[int], list[int]]:
    """Filler tokens and the positions where needles may go in."""
    lo, hi = cfg.filler_range
    H = cfg.haystack_len
    if cfg.haystack == "repeat":
        tokens = [lo + (i % cfg.n_filler) for i in range(H)]
        slots = list(range(0, H + 1, cfg.sentence_len))
        if slots[-1] != H:
            slots.append(H)
    else:
        tokens = [rng.randrange(lo, hi) for _ in range(H)]
        slots = list(range(H + 1))
    return tokens, slots


def _slot_at(depth: float, slots: list[int]) -> int:
    return slots[min(len(slots) - 1, int(round(depth * (len(slots) - 1))))]


def _one(cfg: NIAHConfig, rng: random.Random) -> tuple[list[int], list[int], list[int]]:
    """One sequence: (inputs, targets, groups). The steps draw from `rng` in a fixed order (keys,
    values, haystack, depths, questions), so a seed gives the same sequence at every version."""
    keys, pairs = _needles(cfg, rng)
    seq, order = _haystack_with_needles(cfg, rng, pairs)
    starts, answers = _questions(cfg, rng, seq, keys, pairs, order)
    assert len(seq) == cfg.seq_len, (len(seq), cfg)
    return (seq, *_targets(cfg, starts, answers))


def _needles(cfg: NIAHConfig, rng: random.Random) -> tuple[list[list[int]], list[tuple[list[int], list[int]]]]:
    """(the keys, the needles' (key, value) pairs): distinct key and value tokens; multivalue's
    needles share the first key."""
    k_lo, k_hi = cfg.key_range
    v_lo, v_hi = cfg.value_range
    key_toks = rng.sample(range(k_lo, k_hi), cfg.n_keys * cfg.key_len)
    keys = [key_toks[i * cfg.key_len:(i + 1) * cfg.key_len] for i in range(cfg.n_keys)]
    val_toks = rng.sample(range(v_lo, v_hi), cfg.needles * cfg.value_len)
    values = [val_toks[i * cfg.value_len:(i + 1) * cfg.value_len] for i in range(cfg.needles)]
    if cfg.subtask == "multivalue":
        return keys, [(keys[0], v) for v in values]
    return keys, list(zip(keys, values))


def _haystack_with_needles(cfg: NIAHConfig, rng: random.Random,
                           pairs: list[tuple[list[int], list[int]]]) -> tuple[list[int], list[int]]:
    """(the haystack with every needle sentence in it at its depth, the needles' indices in the
    order they appear)."""
    hay, slots = _haystack(cfg, rng)
    if cfg.depth is not None:
        at = _slot_at(cfg.depth, slots)
        where = [(at, rng.random()) for _ in pairs]
    else:
        where = [(_slot_at(rng.choice(DEPTH_GRID), slots), rng.random()) for _ in pairs]
    order = sorted(range(len(pairs)), key=lambda i: where[i])
    seq: list[int] = []
    prev = 0
    for i in order:
        pos = where[i][0]
        seq += hay[prev:pos]
        prev = pos
        k, v = pairs[i]
        seq += [NEEDLE, IS, *k, *v, SEP] if cfg.key_next_to_value else [NEEDLE, *k, IS, *v, SEP]
    seq += hay[prev:]
    return seq, order


def _questions(cfg: NIAHConfig, rng: random.Random, seq: list[int], keys: list[list[int]],
               pairs: list[tuple[list[int], list[int]]], order: list[int]) -> tuple[list[int], list[list[int]]]:
    """Append the question(s) and their answer(s) to `seq`; (where each answer starts, the answers'
    value tokens in output order)."""
    answers: list[list[int]] = []
    starts: list[int] = []

    def ask(key: list[int]) -> list[int]:
        return [QUERY, ANSWER, *key] if cfg.key_next_to_value else [QUERY, *key, ANSWER]

    if cfg.subtask in ("single", "multikey"):
        j = rng.randrange(len(pairs))
        seq += ask(pairs[j][0])
        answers.append(pairs[j][1])
        starts.append(len(seq))
        seq += pairs[j][1]
    elif cfg.subtask == "multiquery":
        for j in rng.sample(range(len(pairs)), cfg.n_queries):
            seq += ask(pairs[j][0])
            starts.append(len(seq))
            answers.append(pairs[j][1])
            seq += pairs[j][1]
    else:  # multivalue: every value, in needle order
        seq += ask(keys[0])
        for n, i in enumerate(order):
            if n:
                seq.append(SEP)
            starts.append(len(seq))
            answers.append(pairs[i][1])
            seq += pairs[i][1]
    return starts, answers


def _targets(cfg: NIAHConfig, starts: list[int], answers: list[list[int]]) -> tuple[list[int], list[int]]:
    """(targets, groups): each answer token is the target of the position before it, in the
    group of its answer; every other position is IGNORE / -1."""
    targets = [IGNORE] * cfg.seq_len
    groups = [-1] * cfg.seq_len
    for g, (s, ans) in enumerate(zip(starts, answers)):
        for t, tok in enumerate(ans):
            targets[s + t - 1] = tok  # predicted from the token before it
            groups[s + t - 1] = g
    return targets, groups


def generate_niah(cfg: NIAHConfig, n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` sequences of one subtask: inputs, targets, groups (see the module docstring)."""
    cfg.validate()
    rng = random.Random(int(seed))
    rows = [_one(cfg, rng) for _ in range(n)]
    return {
        "inputs": torch.tensor([r[0] for r in rows], dtype=torch.long).view(n, cfg.seq_len),
        "targets": torch.tensor([r[1] for r in rows], dtype=torch.long).view(n, cfg.seq_len),
        "groups": torch.tensor([r[2] for r in rows], dtype=torch.long).view(n, cfg.seq_len),
    }


def niah_dataset(cfg: NIAHConfig, n: int, seed: int, cache: bool = True) -> dict[str, torch.Tensor]:
    """`generate_niah`, cached on disk under a hash of (config, n, version) and seed."""
    key = {**cfg.to_dict(), "n": int(n), "version": GENERATOR_VERSION}
    return cached("niah", key, seed, lambda: generate_niah(cfg, n, seed), enabled=cache)


def niah_mixture(base: NIAHConfig, subtasks: list[str], n: int, seed: int,
                 cache: bool = True) -> dict[str, torch.Tensor]:
    """``n`` sequences split evenly over `subtasks` (one generator seed each), plus ``subtask``
    [n]: the index into `subtasks` of each sequence."""
    parts, ids = [], []
    counts = [n // len(subtasks) + (1 if i < n % len(subtasks) else 0) for i in range(len(subtasks))]
    for i, (name, count) in enumerate(zip(subtasks, counts)):
        if not count:
            continue
        d = niah_dataset(dataclasses.replace(base, subtask=name), count, seed * 1000 + i, cache=cache)
        parts.append(d)
        ids.append(torch.full((count,), i, dtype=torch.long))
    out = {k: torch.cat([p[k] for p in parts]) for k in ("inputs", "targets", "groups")}
    out["subtask"] = torch.cat(ids)
    return out


__all__ = ["NIAHConfig", "generate_niah", "niah_dataset", "niah_mixture", "SUBTASKS", "HAYSTACKS",
           "NEEDLE", "IS", "QUERY", "ANSWER", "SEP", "N_SPECIAL", "DEPTH_GRID", "GENERATOR_VERSION"]
