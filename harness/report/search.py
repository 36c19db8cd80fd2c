"""The report's placement-search section: the path a greedy placement search took, from the table
alone (harness.placement_search.greedy_placement, the function the sweep chose with), how many
models it trained, and the found placement against the fixed policies at the same k and seeds.

It appears for every model family of the table that holds a search: a single-attention-layer
model at every layer index on every seed (round 1). Rows are keyed by their set of attention
layers, never by their label ("attn:3" at depth 4 is stored as "3:1"). A difference within the
seeds' spread is a tie (harness.report.stats.is_tie), as in every verdict of the report.
"""
from __future__ import annotations

import math

import pandas as pd

from harness.metrics import higher_is_better
from harness.placement_search import (
    DEFAULT_COMPARE,
    TIE_BREAK_METRIC,
    Candidate,
    Round,
    greedy_placement,
    layout_spec,
    measure,
    models_trained,
    policy_layers,
    search_groups,
    search_metric,
    search_seeds,
)

from .fmt import fmt_mean_std, fmt_value, md_table
from .sections import ReportContext, _d
from .stats import is_tie
from .style import variant_label

__all__ = ["search_section", "search_path", "policy_comparison"]

INTRO = (
    "## Placement search\n\nWhere should k attention layers go? A greedy forward selection read from the table "
    "(`placement_search:` in a suite, docs/suites.md): round 1 trains one model per layer index with its one "
    "attention layer there; round k adds one attention layer, at every free index in turn, to the best set of "
    "round k-1. Best = the highest mean over seeds (the lowest for a loss); equal means go to fewer mean "
    "`train_steps`, then to the lower new index. Candidates read `mean ± std (n seeds)`; *vs chosen* says whether "
    "a candidate is within the seeds' spread of the chosen one (a **tie**: the choice between them is not "
    "decided by the data). Layers are 0-based, counted from the input.")


def _cand_text(c: Candidate | None, unit: str = "") -> str:
    return "—" if c is None else fmt_mean_std(c.mean, c.std, c.n, unit)


def search_path(rounds: list[Round]) -> pd.DataFrame:
    """One row per candidate of every round: round, attention layers, score, steps, vs chosen."""
    rows = []
    for r in rounds:
        chosen = next((c for c in r.candidates if c.layers == r.chosen), None)
        for c in sorted(r.candidates, key=lambda c: c.layers):
            if chosen is None:
                vs = "round not complete"
            elif c is chosen:
                vs = "**chosen**"
            else:
                vs = "tie" if is_tie(c.mean, c.std, chosen.mean, chosen.std) else "below"
            rows.append({"round (k)": r.k, "attention layers": layout_spec(c.layers), "score": _cand_text(c),
                         TIE_BREAK_METRIC: fmt_value(c.steps) if not math.isnan(c.steps) else "—", "vs chosen": vs})
        rows += [{"round (k)": r.k, "attention layers": layout_spec(m), "score": "not run on every seed",
                  TIE_BREAK_METRIC: "—", "vs chosen": "—"} for m in r.missing]
    return pd.DataFrame(rows)


def _verdict(found: Candidate, other: Candidate, higher: bool) -> str:
    if other.layers == found.layers:
        return "same layers"
    if is_tie(found.mean, found.std, other.mean, other.std):
        return "tie (within the seeds' spread)"
    return "search better" if (found.mean > other.mean) == higher else "policy better"


def policy_comparison(fam: pd.DataFrame, metric: str, rounds: list[Round]) -> pd.DataFrame:
    """Per decided round k the depth divides: the found set beside each fixed policy's set at k,
    on the same seeds, with the verdict (a tie when within the seeds' spread)."""
    n, seeds = int(fam["n_layers"].dropna().iloc[0]), search_seeds(fam, metric)
    higher = bool(higher_is_better(metric))
    out = []
    for r in rounds:
        found = next((c for c in r.candidates if c.layers == r.chosen), None)
        for policy in DEFAULT_COMPARE:
            at = policy_layers(n, r.k, policy)
            if found is None or at is None:
                continue
            other = measure(fam, metric, at, seeds)
            out.append({"k": r.k, "found": layout_spec(found.layers), "found score": _cand_text(found),
                        "policy": f"{n // r.k - 1}:1 {policy}", "policy layers": layout_spec(at),
                        "policy score": _cand_text(other),
                        "verdict": "not run on the same seeds" if other is None else _verdict(found, other, higher)})
    return pd.DataFrame(out)


def _family_title(fam: pd.DataFrame) -> str:
    first = fam.iloc[0]
    return (f"### {variant_label(str(first['variant']))}, depth {int(first['n_layers'])}, "
            f"{_d(first.get('d_model'))}")


def search_section(ctx: ReportContext) -> None:
    families = search_groups(ctx.ok)
    if not families:
        return
    ctx.add(INTRO)
    for fam in families:
        metric = search_metric(fam)
        n = int(fam["n_layers"].dropna().iloc[0])
        rounds = greedy_placement(fam, metric, n, n - 1)
        if not rounds[-1].complete and not rounds[-1].candidates:
            rounds = rounds[:-1]  # the search stopped before this round (its k was reached)
        done = [r for r in rounds if r.complete]
        seeds = search_seeds(fam, metric)
        found = f"found **{layout_spec(done[-1].chosen)}**" if done else "no round decided"
        ctx.add(f"{_family_title(fam)}\n\nRanked by `{metric}` on seeds {', '.join(map(str, seeds))}; "
                f"{len(done)} round(s) decided, {found}. The search trained **{models_trained(rounds)} models** "
                f"({sum(len(r.candidates) for r in rounds)} candidate placements x {len(seeds)} seed(s); a candidate "
                f"that is also a fixed policy is one model).\n\n" + md_table(search_path(rounds)))
        table = policy_comparison(fam, metric, done)
        if not table.empty:
            ctx.add(f"Found placement vs the fixed policies at each k the depth divides (`{metric}`, same seeds):\n\n"
                    + md_table(table))
