"""Greedy placement search: which k layers of a hybrid should be softmax attention, read from a
results table alone (pure pandas, no torch; the sweep that runs the search and the report that
shows it both call `greedy_placement`, so the table is the search's only state).

Greedy forward selection: round 1 trains one model per layer index with a single attention layer
there; round j trains, for the best set S of round j-1, one model per S + {i} (every i not in S);
the best candidate of round j is the set the next round extends. "Best" is the highest mean over
seeds of the search metric (the lowest for a loss: the catalogue's direction, harness.metrics),
each seed's value first averaged over the cell's rows (lengths, subtasks), as the report does.
Ties of the mean (to 12 decimals) are broken by the lower mean `train_steps` (learned sooner;
used where the table has it), then by the lower new layer index. A round is decided only when
every candidate has a value for every seed; otherwise it is pending (`Round.chosen` is None) and
the rounds after it do not exist yet.

Layouts canonicalise ("attn:3" at depth 4 is "3:1"; "attn:0" is "3:1" bottom): rows are keyed
by their set of attention layer indices (`attention_set`), never by a label.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from harness.metrics import higher_is_better
from harness.model.layout import ATTN, DEFAULT_PLACEMENT, LayoutError, place_attention, resolve_layout

__all__ = ["Candidate", "Round", "greedy_placement", "attention_set", "layout_spec", "policy_layers",
           "search_metric", "search_groups", "models_trained", "measure", "search_seeds", "SEARCH_METRICS",
           "TIE_BREAK_METRIC", "DEFAULT_COMPARE"]

#: the metrics a search may rank by, in the order the report picks the first a group has: a
#: task's score (recall for mqar / niah, held-out loss for lm), never a training measure
SEARCH_METRICS = ("recall_acc", "val_loss", "val_bpb", "val_ppl")
#: the tie-break of equal means: fewer training steps (the early stop came sooner)
TIE_BREAK_METRIC = "train_steps"
#: the fixed policies the found placement is compared with (harness.model.layout.PLACEMENTS)
DEFAULT_COMPARE = ("interleave", "top", "middle", "bottom")
_DECIMALS = 12

Layers = tuple[int, ...]


@dataclass(frozen=True)
class Candidate:
    """One candidate set of attention layers: the metric's mean, sample std (NaN for one seed)
    and seed count, and the mean training steps (NaN where the table has none)."""

    layers: Layers
    mean: float
    std: float
    n: int
    steps: float = math.nan


@dataclass(frozen=True)
class Round:
    """Round k: the best set of round k-1 (`base`), the candidates measured on every seed, those
    still missing a seed, and the chosen set (None while any candidate is missing)."""

    k: int
    base: Layers
    candidates: tuple[Candidate, ...]
    missing: tuple[Layers, ...]
    chosen: Layers | None

    @property
    def complete(self) -> bool:
        return self.chosen is not None

    def candidate_sets(self) -> list[Layers]:
        return sorted([c.layers for c in self.candidates] + list(self.missing))


def attention_set(layout: str, placement: str | None, n_layers) -> Layers | None:
    """The attention layer indices of a stored (layout, placement) at depth `n_layers`; None for
    a layout that is not whole layers (head-wise) or cannot be read."""
    try:
        place = DEFAULT_PLACEMENT if placement is None or pd.isna(placement) else str(placement)
        kinds = resolve_layout(str(layout), int(n_layers), place)
    except (LayoutError, ValueError, TypeError):
        return None
    if any(k not in ("L", ATTN) for k in kinds):
        return None
    return tuple(i for i, k in enumerate(kinds) if k == ATTN)


def layout_spec(layers: Layers) -> str:
    """The layout that puts attention exactly at `layers` ("attn:0,3")."""
    return "attn:" + ",".join(str(i) for i in sorted(layers))


def policy_layers(n_layers: int, k: int, policy: str) -> Layers | None:
    """The attention layers of a fixed placement policy with k attention layers at depth
    `n_layers` (a ratio r:1 with r = n_layers/k - 1), None where the depth has no such ratio."""
    if not 0 < k < n_layers or n_layers % k:
        return None
    kinds = place_attention(n_layers // k - 1, n_layers, policy)
    return tuple(i for i, x in enumerate(kinds) if x == ATTN)


def search_metric(rows: pd.DataFrame) -> str | None:
    """The first of SEARCH_METRICS that `rows` hold (what the report ranks a group by)."""
    have = set(rows["metric"]) if "metric" in rows.columns else set()
    return next((m for m in SEARCH_METRICS if m in have), None)


def _per_seed(rows: pd.DataFrame, metric: str) -> dict[tuple[Layers, int], float]:
    """(attention set, seed) -> the mean of `metric` over the cell's ok rows."""
    sub = rows[(rows["metric"] == metric) & (rows["status"].fillna("ok") == "ok")]
    sub = sub[pd.to_numeric(sub["value"], errors="coerce").map(lambda v: v is not None and math.isfinite(v))]
    if sub.empty:
        return {}
    keys = [attention_set(lay, pl, n) for lay, pl, n in zip(_layout_col(sub), sub["placement"], sub["n_layers"])]
    frame = pd.DataFrame({"at": keys, "seed": sub["seed"].astype(float).astype(int).values,
                          "value": sub["value"].astype(float).values})
    frame = frame[frame["at"].notna()]
    return {(at, int(s)): float(v) for (at, s), v in frame.groupby(["at", "seed"])["value"].mean().items()}


def _layout_col(rows: pd.DataFrame) -> pd.Series:
    """The stored layout: `ratio` in a report-normalised table (whose `layout` reads "3:1 bottom")."""
    return rows["ratio"] if "ratio" in rows.columns else rows["layout"]


def _candidate(layers: Layers, seeds: list[int], values: dict, steps: dict) -> Candidate | None:
    vals = [values.get((layers, s)) for s in seeds]
    if not seeds or any(v is None for v in vals):
        return None
    s = pd.Series(vals, dtype=float)
    st = [steps[(layers, x)] for x in seeds if (layers, x) in steps]
    return Candidate(layers, float(s.mean()), float(s.std()) if len(s) > 1 else math.nan, len(s),
                     float(sum(st) / len(st)) if st else math.nan)


def _order(c: Candidate, base: Layers, higher: bool) -> tuple:
    """Sort key, best first: the mean (in the metric's direction), fewer steps, lower new index."""
    mean = round(c.mean, _DECIMALS)
    new = min(set(c.layers) - set(base))
    return (-mean if higher else mean, c.steps if not math.isnan(c.steps) else math.inf, new)


def greedy_placement(rows: pd.DataFrame, metric: str, n_layers: int, k: int,
                     seeds: list[int] | None = None) -> list[Round]:
    """The rounds of a greedy placement search over `rows` (the rows of ONE model family: one
    variant and one model/task setting, any layouts; raw or report-normalised), up to k attention
    layers: every decided round, then the first pending one if any. `seeds`: the seeds every
    candidate needs (default: those the metric's rows have). See the module docstring for the
    rule and its tie-breaks."""
    higher = higher_is_better(metric)
    if higher is None:
        raise ValueError(f"metric {metric!r} has no direction in the catalogue (harness/metrics.yaml): "
                         f"a search needs to know whether higher is better")
    if not 0 < k < n_layers:
        raise ValueError(f"a search of k={k} attention layers needs 1 <= k < n_layers={n_layers}")
    values = _per_seed(rows, metric)
    steps = _per_seed(rows, TIE_BREAK_METRIC) if metric != TIE_BREAK_METRIC else {}
    seeds = sorted(seeds) if seeds is not None else sorted({s for _, s in values})
    base: Layers = ()
    rounds: list[Round] = []
    for j in range(1, k + 1):
        sets = [tuple(sorted((*base, i))) for i in range(n_layers) if i not in base]
        found = {at: _candidate(at, seeds, values, steps) for at in sets}
        measured = tuple(c for c in found.values() if c is not None)
        missing = tuple(at for at, c in found.items() if c is None)
        chosen = None if missing else min(measured, key=lambda c: _order(c, base, higher)).layers
        rounds.append(Round(j, base, measured, missing, chosen))
        if chosen is None:
            break
        base = chosen
    return rounds


def measure(rows: pd.DataFrame, metric: str, layers: Layers, seeds: list[int]) -> Candidate | None:
    """`layers` measured by `metric` on every one of `seeds` (e.g. a fixed policy, to set beside
    the found placement on the same seeds), None where some seed has no value."""
    steps = _per_seed(rows, TIE_BREAK_METRIC) if metric != TIE_BREAK_METRIC else {}
    return _candidate(tuple(layers), sorted(seeds), _per_seed(rows, metric), steps)


def search_seeds(rows: pd.DataFrame, metric: str) -> list[int]:
    """The seeds of a family's `metric` rows (those each candidate of its search needs)."""
    return sorted({s for _, s in _per_seed(rows, metric)})


def models_trained(rounds: list[Round]) -> int:
    """The models the search trained: every measured candidate, once per seed (a candidate of
    several rounds is one model; the fixed policies it coincides with cost nothing more)."""
    seen: dict[Layers, int] = {}
    for r in rounds:
        for c in r.candidates:
            seen[c.layers] = c.n
    return sum(seen.values())


#: the columns besides the model that make two rows one model family (seed and layout aside)
_FAMILY = ("task", "params", "seq_len", "batch", "dtype")
_MODEL = ("variant", "n_layers", "d_model", "n_heads", "window")


def _base_model(config) -> str:
    """A model_config JSON without its layout and placement: what a family's models share."""
    try:
        cfg = json.loads(config)
    except (TypeError, ValueError):
        return ""
    return json.dumps({k: v for k, v in cfg.items() if k not in ("layout", "placement")}, sort_keys=True)


def _text(v) -> str:
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def _family_keys(rows: pd.DataFrame) -> pd.Series:
    """One string per row: what its model family shares (seed, layout and placement aside)."""
    parts = pd.Series("", index=rows.index, dtype=object)
    for c in [c for c in _FAMILY + _MODEL if c in rows.columns]:
        parts = parts + "|" + rows[c].astype(object).map(_text)
    if "model_config" in rows.columns:
        bases = {c: _base_model(c) for c in rows["model_config"].dropna().unique()}
        parts = parts + "|" + rows["model_config"].astype(object).map(lambda c: bases.get(c, ""))
    return parts


def search_groups(table: pd.DataFrame) -> list[pd.DataFrame]:
    """The model families of `table` that hold a search: a linear variant (not the Transformer)
    with a search metric and, at one depth, a single-attention-layer model at every layer index
    on every seed (round 1 complete). Each family's rows, in table order."""
    need = {"metric", "variant", "n_layers", "seed", "value", "placement"}
    if table.empty or not need <= set(table.columns):
        return []
    rows = table[table["variant"] != "attention"]
    out = []
    for _, fam in rows.groupby(_family_keys(rows), sort=False):
        metric = search_metric(fam)
        depth = fam["n_layers"].dropna()
        if metric is None or depth.nunique() != 1 or int(depth.iloc[0]) < 2:
            continue
        first = greedy_placement(fam, metric, int(depth.iloc[0]), 1)
        if first[0].complete:
            out.append(fam)
    return out
