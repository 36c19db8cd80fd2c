"""Which hybrid to use: the best (variant, layout, placement, window) in a results table under constraints.

    recommend(df, Constraints(seq_len=4096, max_cache_bytes=2e6, min_score=0.9, objective="cache"))

Candidates are the models of the table (d_model, variant, layout with its placement and sliding
window: "3:1 w=64" is another model than "3:1") that have an accuracy score and the costs the
question needs, at the asked length (a windowed model's analytic cache there is bounded by its window):
- accuracy: the report's score (recall_acc, else the lm-eval average, else the LM loss; see
  harness.report.tables) measured at `accuracy_len` (default: the asked length; "all" averages
  every measured length, and the answer says so); models that did not learn (recall at the
  plateau) are left out and named;
- costs at `seq_len`: the analytic `cache_bytes` and the measured `decode_token_s` (context of
  `seq_len` tokens), never extrapolated from other lengths.
The feasible models meet every budget and the floor; the Pareto front is over accuracy and the
costs used; the objective picks one feasible model ("accuracy": the most accurate; "cache" /
"latency": the cheapest). When the table cannot answer, the answer says why (no rows at that
length, nothing learned, nothing feasible) and what it has; timings taken on a loaded machine are
flagged.

Ties use the report's one rule (harness.report.stats.is_tie: two means whose difference is at most
their two stds across seeds summed). The most accurate model is named with every feasible model
that ties with it (the answer is then undecided between them); with one seed no spread is known,
and the answer says so. The report's "Which hybrid to use" (`which_hybrid_rows`) reads the same
rule: its "cheapest near it" is the cheapest model that ties with the most accurate, with a floor
of NEAR_FLOOR of the best score (the floor of `stats.tie_tolerance`), so one-seed tables still get an
answer.

A question that cannot mean what it says is refused (ValueError; `harness recommend` exits 2):
a budget that is not positive (NaN included), an `accuracy_len` that is not a positive length
or "all", a floor outside what the table's score can be (a recall of 2, a negative loss).
`harness recommend` on a folder with cell files it cannot read names them in the answer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from . import tables
from .cost_tables import pareto_mask
from .fmt import fmt_mean_std, fmt_value, md_table
from .normalise import normalize, ok_rows
from .stats import is_tie, spread_known

OBJECTIVES = ("accuracy", "cache", "latency")
COST_METRICS = {"cache": "cache_bytes", "latency": "decode_token_s"}
KEYS = ["d_model", "variant", "layout"]  # layout carries the placement and window ("3:1 bottom w=64")
#: "near the most accurate": tied with it within the seeds' spread, or within this fraction of its score
NEAR_FLOOR = 0.02


@dataclass
class Constraints:
    seq_len: int
    max_cache_bytes: float | None = None
    max_decode_s: float | None = None
    #: accuracy floor: a minimum for higher-is-better scores (recall, lm-eval), a maximum for losses
    min_score: float | None = None
    objective: Literal["accuracy", "cache", "latency"] = "accuracy"
    #: the length whose accuracy counts (None: `seq_len`; "all": every measured length, averaged)
    accuracy_len: int | str | None = None

    def __post_init__(self) -> None:
        """Refuse a question that cannot mean what it says (each message names the option)."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; expected one of {', '.join(OBJECTIVES)}")
        if isinstance(self.seq_len, bool) or not isinstance(self.seq_len, (int, np.integer)) or self.seq_len <= 0:
            raise ValueError(f"seq_len (--seq-len) must be a positive number of tokens, got {self.seq_len!r}")
        for name, flag, value in (("max_cache_bytes", "--max-cache-bytes", self.max_cache_bytes),
                                  ("max_decode_s", "--max-decode-ms", self.max_decode_s)):
            # a NaN budget compares False with everything: nothing would fit, for no stated reason
            if value is not None and not (value > 0):
                raise ValueError(f"{name} ({flag}) must be a positive budget, got {value!r}; leave it out for "
                                 f"no budget")
        if self.min_score is not None and not np.isfinite(self.min_score):
            raise ValueError(f"min_score (--min-score) must be a finite number, got {self.min_score!r}")
        L = self.accuracy_len
        if not (L is None or L == "all" or (isinstance(L, (int, np.integer)) and not isinstance(L, bool) and L > 0)):
            raise ValueError(f"accuracy_len (--accuracy-len) must be a positive length or 'all', got {L!r}")

    def costs(self) -> list[str]:
        """The cost metrics this question needs."""
        need = []
        if self.max_cache_bytes is not None or self.objective == "cache":
            need.append("cache")
        if self.max_decode_s is not None or self.objective == "latency":
            need.append("latency")
        return need or ["cache"]  # an accuracy question still reports what the answer costs


@dataclass
class Recommendation:
    answered: bool
    constraints: Constraints
    choice: dict | None = None  # d_model, variant, layout (with placement), score, costs
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)  # the candidates behind the answer

    def markdown(self) -> str:
        c = self.constraints
        lines = [f"**Question.** At L = {c.seq_len}: objective `{c.objective}`"
                 + "".join(f", {k} ≤ {fmt_value(v, u)}" for k, v, u in (
                     ("cache", c.max_cache_bytes, "bytes"), ("decode step", c.max_decode_s, "s")) if v is not None)
                 + (f", score floor {c.min_score}" if c.min_score is not None else "") + "."]
        if self.answered and self.choice:
            ch = self.choice
            tied = ch.get("tied") or []
            lines.append(f"**Answer.** `{ch['variant']}` at layout `{ch['layout']}` (d_model {int(ch['d_model'])})"
                         + (f"; undecided between it and {', '.join(tied)}: they tie within the seeds' spread."
                            if tied else "."))
        else:
            lines.append("**The table cannot answer.**")
        lines += [f"- {r}" for r in self.reasons]
        lines += [f"- ⚠ {w}" for w in self.warnings]
        if not self.rows.empty:
            lines.append("")
            lines.append(md_table(display(self.rows)))
        return "\n".join(lines)


def display(rows: pd.DataFrame) -> pd.DataFrame:
    """The candidates as a readable table."""
    out = pd.DataFrame({"d_model": rows["d_model"].map(lambda d: "?" if pd.isna(d) else str(int(d))),
                        "variant": rows["variant"], "layout": rows["layout"],
                        "score": [fmt_mean_std(m, s, n) for m, s, n in zip(rows["mean"], rows["std"], rows["n"])]})
    for kind, metric in COST_METRICS.items():
        if metric in rows.columns:
            out[metric] = rows[metric].map(lambda v, u=("bytes" if kind == "cache" else "s"): fmt_value(v, u))
    for col in ("feasible", "pareto"):
        if col in rows.columns:
            out[col] = rows[col].map(lambda b: "yes" if b else "")
    return out


def _accuracy(ok: pd.DataFrame, c: Constraints) -> tuple[tables.Score | None, str | None, str]:
    """(score over the chosen lengths, why not, which lengths)."""
    score = tables.accuracy_score(ok)
    if score is None:
        return None, "no accuracy rows (recall_acc, lm_eval/*, val_loss): nothing to rank by", ""
    rows = ok[ok["metric"].str.startswith("lm_eval/")] if score.kind == "lm_eval" else ok[ok["metric"] == score.metric]
    lengths = sorted({int(x) for x in rows["seq_len"].dropna()})
    if c.accuracy_len == "all":
        return score, None, f"accuracy averaged over every measured length ({', '.join(map(str, lengths))})"
    want = int(c.seq_len if c.accuracy_len is None else c.accuracy_len)
    if want not in lengths:
        return None, (f"accuracy ({score.metric}) was measured at length(s) {', '.join(map(str, lengths)) or 'none'}, "
                      f"not at {want}: rerun at {want}, or pass --accuracy-len with one of those lengths (or 'all') "
                      f"to rank by accuracy measured elsewhere"), ""
    at = ok[(ok["seq_len"] == want) | ok["seq_len"].isna()]
    return tables.accuracy_score(at), None, f"accuracy measured at length {want}"


def _costs(ok: pd.DataFrame, metric: str, L: int) -> tuple[pd.DataFrame, list[int], bool]:
    """Per model: the mean of `metric` at length L (decode: a context of L tokens), the lengths
    the table has, and whether any of those rows was timed on a loaded machine."""
    rows = ok[ok["metric"] == metric]
    col = "context_len" if metric == "decode_token_s" and rows["context_len"].notna().any() else "seq_len"
    lengths = sorted({int(x) for x in rows[col].dropna()})
    at = rows[rows[col] == L]
    at = tables.at_smallest(at, "batch")
    loaded = bool(at["loaded"].fillna(False).astype(bool).any()) if "loaded" in at.columns else False
    per = at.groupby(KEYS, dropna=False)["value"].mean().rename(metric).reset_index()
    return per, lengths, loaded


def _pareto(df: pd.DataFrame, higher: bool, costs: list[str]) -> pd.Series:
    """True for rows no other row beats on the score and every cost at once."""
    s = df["mean"].to_numpy(float) * (1 if higher else -1)
    return pd.Series(pareto_mask(np.column_stack([s, -df[costs].to_numpy(float)])), index=df.index)


def recommend(df: pd.DataFrame, c: Constraints) -> Recommendation:
    """The best model of a results table `df` under `c`, with the rows behind the answer.
    Raises ValueError when the floor cannot be a value of the table's score (`check_floor`)."""
    ok = ok_rows(normalize(df))
    check_floor(ok, c)
    return _recommend(ok, c)


def check_floor(ok: pd.DataFrame, c: Constraints) -> None:
    """Raise ValueError when `c.min_score` lies outside every value the table's score can take
    (a recall or lm-eval accuracy of 2; a negative loss): no model could meet it, which is a
    mistake in the question (often a percentage for a fraction), not an answer."""
    if c.min_score is None:
        return
    score = tables.accuracy_score(ok)
    if score is None:
        return  # the answer says there is no score
    if score.kind in ("recall", "lm_eval") and not 0 <= c.min_score <= 1:
        raise ValueError(f"min_score (--min-score) {c.min_score:g} is outside 0..1, the range of the table's score "
                         f"({score.description}); give a fraction, e.g. 0.9 for 90 %")
    if score.kind == "lm" and not score.higher_is_better and c.min_score < 0:
        raise ValueError(f"min_score (--min-score) {c.min_score:g} is negative, but the table's score is a loss "
                         f"({score.description}), never below 0; give the largest loss you accept")


def _recommend(ok: pd.DataFrame, c: Constraints) -> Recommendation:
    rec = Recommendation(False, c)
    score, why, acc_note = _accuracy(ok, c)
    if score is None:
        rec.reasons.append(why or "no accuracy rows")
        return rec
    summary = score.summary()
    unlearned = summary[~summary["learned"]]
    if not unlearned.empty:
        rec.warnings.append("left out, did not learn (recall at the plateau): "
                            + ", ".join(f"{v} {lay}" for v, lay in zip(unlearned["variant"], unlearned["layout"])))
    cand = summary[summary["learned"]].drop(columns=["learned"])
    if cand.empty:
        rec.reasons.append("no model learned the task: no accuracy to rank by")
        return rec
    cand, used = _with_costs(rec, ok, cand, c)
    if cand is None:
        return rec
    if cand.empty:
        rec.reasons.append("no learned model has every cost this question needs at this length")
        return rec
    higher = score.higher_is_better
    feasible = pd.Series(True, index=cand.index)
    if c.max_cache_bytes is not None:
        feasible &= cand["cache_bytes"] <= c.max_cache_bytes
    if c.max_decode_s is not None:
        feasible &= cand["decode_token_s"] <= c.max_decode_s
    if c.min_score is not None:
        feasible &= (cand["mean"] >= c.min_score) if higher else (cand["mean"] <= c.min_score)
    cand = cand.assign(feasible=feasible, pareto=_pareto(cand, higher, used))
    rec.rows = tables.order(cand)
    rec.reasons.append(f"score: {score.description}; {acc_note}")
    rec.reasons += _window_note(cand, c.seq_len)
    if not feasible.any():
        rec.reasons.append("no model meets every constraint; the candidates are below")
        return rec
    pool = cand[feasible]
    if c.objective == "accuracy":
        pool = pool.sort_values(["mean", used[0]], ascending=[not higher, True])
    else:
        metric = COST_METRICS[c.objective]
        pool = pool.sort_values([metric, "mean"], ascending=[True, not higher])
    best = pool.iloc[0]
    rec.answered = True
    rec.choice = {k: best[k] for k in KEYS + ["mean", "std", "n", *used]}
    rec.reasons.append(f"{len(pool)} of {len(cand)} candidates meet the constraints; "
                       + ("the most accurate of them" if c.objective == "accuracy" else
                          f"the one with the smallest {COST_METRICS[c.objective]}") + " is chosen")
    if c.objective == "accuracy":
        _flag_ties(rec, pool, best, names_with_d=cand["d_model"].nunique(dropna=False) > 1)
    return rec


def _with_costs(rec: Recommendation, ok: pd.DataFrame, cand: pd.DataFrame,
                c: Constraints) -> tuple[pd.DataFrame | None, list[str]]:
    """The candidates with a column per cost the question needs (at `c.seq_len`) and those metrics;
    None when the table has no rows of a cost there (the reason is added to `rec`)."""
    used = []
    for kind in c.costs():
        metric = COST_METRICS[kind]
        per, lengths, loaded = _costs(ok, metric, c.seq_len)
        if per.empty:
            rec.reasons.append(f"no `{metric}` rows at L = {c.seq_len}; the table has it at "
                               f"{', '.join(map(str, lengths)) or 'no length'} "
                               "(run the efficiency/analytic task there)")
            return None, used
        missing = cand.merge(per, on=KEYS, how="left")
        gone = missing[missing[metric].isna()]
        if not gone.empty:
            rec.warnings.append(f"left out, no `{metric}` at L = {c.seq_len}: "
                                + ", ".join(f"{v} {lay}" for v, lay in zip(gone["variant"], gone["layout"])))
        cand = missing.dropna(subset=[metric])
        if loaded and kind == "latency":
            rec.warnings.append("some decode timings at this length were taken on a loaded machine (`loaded`): "
                                "rerun them on an idle one before trusting a latency ranking")
        used.append(metric)
    return cand, used


def _window_note(cand: pd.DataFrame, L: int) -> list[str]:
    """A reason naming the candidates with a sliding window ("3:1 w=64"), whose cache is bounded."""
    windowed = sorted({lay for lay in cand["layout"] if re.search(r" w=\d+$", str(lay))})
    if not windowed:
        return []
    return [f"layouts with `w=W` ({', '.join(windowed)}) have sliding-window attention: their cache at L = {L} "
            "(analytic `cache_bytes`) holds min(L, W) tokens per attention layer, so it stops growing at the "
            "window W"]


def model_name(row, with_d: bool = False) -> str:
    """"variant layout" (with "d=…" where the table has several widths)."""
    d = row["d_model"]
    return f"{row['variant']} {row['layout']}" + (f" d={int(d)}" if with_d and not pd.isna(d) else "")


def tied_with(rows: pd.DataFrame, best: pd.Series, floor: float = 0.0) -> pd.DataFrame:
    """The rows whose mean ties with `best`'s (stats.is_tie: within the two stds summed, at least
    `floor`), `best` itself included when it is one of `rows`."""
    mask = [is_tie(best["mean"], best["std"], m, s, floor) for m, s in zip(rows["mean"], rows["std"])]
    return rows[np.asarray(mask, dtype=bool)]


def _flag_ties(rec: Recommendation, pool: pd.DataFrame, best: pd.Series, names_with_d: bool) -> None:
    """Name the feasible models that tie with the most accurate `best` (the answer is undecided
    between them), or say that no spread is known (one seed)."""
    if len(pool) < 2:
        return
    others = pool.drop(index=best.name)
    one_seed = [model_name(r, names_with_d) for _, r in pool.iterrows() if pd.isna(r["std"])]
    if not spread_known(pool["std"]):
        rec.warnings.append("one seed: no spread across seeds is known for " + (
            "any model" if len(one_seed) == len(pool) else ", ".join(one_seed))
            + ", so a lead over them cannot be told from noise")
    tied = tied_with(others, best)
    rec.choice["tied"] = [model_name(r, names_with_d) for _, r in tied.iterrows()]
    if not tied.empty:
        worst = max(abs(best["mean"] - m) for m in tied["mean"])
        rec.warnings.append(f"tie within the seeds' spread: {len(tied)} other feasible model(s) score within their "
                            f"two stds summed of the choice (up to {fmt_value(worst)} below it): "
                            f"{', '.join(rec.choice['tied'])}; the table cannot separate them: undecided")


def which_hybrid_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The report's "Which hybrid to use" table (see `which_hybrid`)."""
    return which_hybrid(df)[0]


def which_hybrid(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The report's "Which hybrid to use": per length with analytic cache rows, the most accurate
    learned model (undecided, with the models tied with it, where others tie within the seeds'
    spread: the `harness recommend` rule) and the one with the smallest cache near it (tied with
    it, at least NEAR_FLOOR of its score: the floor of `stats.tie_tolerance`). Accuracy: every
    measured length, averaged. Returns the table and the notes that name the ties (or say that no
    spread is known)."""
    ok = ok_rows(normalize(df))
    lengths = sorted({int(x) for x in ok.loc[ok["metric"] == "cache_bytes", "seq_len"].dropna()})
    out, ties = [], {}
    for L in lengths:
        top = _recommend(ok, Constraints(seq_len=L, objective="accuracy", accuracy_len="all"))
        if not top.answered:
            continue
        best, rows = pd.Series(top.choice), top.rows
        with_d = rows["d_model"].nunique(dropna=False) > 1
        tied = list(top.choice.get("tied") or [])
        near = tied_with(rows, best, floor=NEAR_FLOOR * abs(float(best["mean"])))
        ch = near.sort_values(["cache_bytes", "mean"], ascending=[True, not _higher(ok)]).iloc[0]
        name = model_name(best, with_d)
        if tied:
            ties.setdefault((name, fmt_mean_std(best["mean"], best["std"], best["n"]), tuple(tied)), []).append(L)
        out.append({"seq_len": L, "most accurate": _most_accurate(name, tied, rows["std"]),
                    "its score": fmt_mean_std(best["mean"], best["std"], best["n"]),
                    "its cache": fmt_value(best["cache_bytes"], "bytes"),
                    "cheapest near it": model_name(ch, with_d),
                    "score": fmt_mean_std(ch["mean"], ch["std"], ch["n"]),
                    "cache": fmt_value(ch["cache_bytes"], "bytes"),
                    "cache saved": f"{best['cache_bytes'] / ch['cache_bytes']:.3g}×" if ch["cache_bytes"] else "—"})
    return pd.DataFrame(out), _tie_notes(ties, ok, lengths)


def _higher(ok: pd.DataFrame) -> bool:
    score = tables.accuracy_score(ok)
    return True if score is None else score.higher_is_better


def _most_accurate(name: str, tied: list[str], stds: pd.Series) -> str:
    if tied:
        return (f"undecided between {name}, {', '.join(tied)}" if len(tied) <= 2 else
                f"undecided: {name} and {len(tied)} tied with it (below)")
    return name if spread_known(stds) else f"{name} (one seed: no spread known)"


def _tie_notes(ties: dict, ok: pd.DataFrame, lengths: list[int]) -> list[str]:
    """One line per distinct set of models tied with the most accurate; one on unknown spread."""
    notes = [f"**Ties at L = {', '.join(map(str, Ls))}.** {name} has the highest mean, {score}, but "
             f"{len(tied)} model(s) tie with it within the seeds' spread (their means differ by no more than "
             f"the two stds summed, the rule of the claims): {', '.join(tied)}. The table cannot name one most "
             f"accurate model: undecided between these {len(tied) + 1}."
             for (name, score, tied), Ls in ties.items()]
    score = tables.accuracy_score(ok) if lengths else None
    if score is not None:
        s = score.learned_summary()
        if not s.empty and not spread_known(s["std"]):
            few = s["std"].notna().any()
            notes.append(f"**One seed{' for some models' if few else ''}.** No spread across seeds is known"
                         + (" for " + ", ".join(model_name(r) for _, r in s[s["std"].isna()].iterrows()) if few
                            else "")
                         + ": a lead cannot be told from noise, and \"near it\" "
                         f"means within {NEAR_FLOOR * 100:g} % of the most accurate score.")
    return notes
