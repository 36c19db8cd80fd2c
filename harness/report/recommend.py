"""Which hybrid to use: the best (variant, layout, placement) in a results table under constraints.

    recommend(df, Constraints(seq_len=4096, max_cache_bytes=2e6, min_score=0.9, objective="cache"))

Candidates are the models of the table (d_model, variant, layout with its placement) that have an
accuracy score and the costs the question needs, at the asked length:
- accuracy: the report's score (recall_acc, else the lm-eval average, else the LM loss; see
  harness.report.tables) measured at `accuracy_len` (default: the asked length; "all" averages
  every measured length, and the answer says so); models that did not learn (recall at the
  plateau) are left out and named;
- costs at `seq_len`: the analytic `cache_bytes` and the measured `decode_token_s` (context of
  `seq_len` tokens), never extrapolated from other lengths.
The feasible models meet every budget and the floor; the Pareto front is over accuracy and the
costs used; the objective picks one feasible model ("accuracy": the most accurate; "cache" /
"latency": the cheapest). When the table cannot answer, the answer says why (no rows at that
length, nothing learned, nothing feasible) and what it has; ties within the seeds' spread and
timings taken on a loaded machine are flagged.

A question that cannot mean what it says is refused (ValueError; `harness recommend` exits 2):
a budget that is not positive (NaN included), an `accuracy_len` that is not a positive length
or "all", a floor outside what the table's score can be (a recall of 2, a negative loss).
`harness recommend` on a folder with cell files it cannot read names them in the answer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import numpy as np
import pandas as pd

from . import tables as T
from .cost_tables import pareto_mask
from .fmt import fmt_mean_std, fmt_value, md_table
from .load import normalize, ok_rows

OBJECTIVES = ("accuracy", "cache", "latency")
COST_METRICS = {"cache": "cache_bytes", "latency": "decode_token_s"}
KEYS = ["d_model", "variant", "layout"]  # layout carries the placement ("3:1 bottom")


@dataclass
class Constraints:
    seq_len: int
    max_cache_bytes: Optional[float] = None
    max_decode_s: Optional[float] = None
    #: accuracy floor: a minimum for higher-is-better scores (recall, lm-eval), a maximum for losses
    min_score: Optional[float] = None
    objective: Literal["accuracy", "cache", "latency"] = "accuracy"
    #: the length whose accuracy counts (None: `seq_len`; "all": every measured length, averaged)
    accuracy_len: Union[int, str, None] = None

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
    choice: Optional[dict] = None  # d_model, variant, layout (with placement), score, costs
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
            lines.append(f"**Answer.** `{ch['variant']}` at layout `{ch['layout']}` (d_model {int(ch['d_model'])}).")
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


def _accuracy(ok: pd.DataFrame, c: Constraints) -> tuple[Optional[T.Score], Optional[str], str]:
    """(score over the chosen lengths, why not, which lengths)."""
    score = T.accuracy_score(ok)
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
    return T.accuracy_score(at), None, f"accuracy measured at length {want}"


def _costs(ok: pd.DataFrame, metric: str, L: int) -> tuple[pd.DataFrame, list[int], bool]:
    """Per model: the mean of `metric` at length L (decode: a context of L tokens), the lengths
    the table has, and whether any of those rows was timed on a loaded machine."""
    rows = ok[ok["metric"] == metric]
    col = "context_len" if metric == "decode_token_s" and rows["context_len"].notna().any() else "seq_len"
    lengths = sorted({int(x) for x in rows[col].dropna()})
    at = rows[rows[col] == L]
    at = T.at_smallest(at, "batch")
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
    score = T.accuracy_score(ok)
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
    used = []
    for kind in c.costs():
        metric = COST_METRICS[kind]
        per, lengths, loaded = _costs(ok, metric, c.seq_len)
        if per.empty:
            rec.reasons.append(f"no `{metric}` rows at L = {c.seq_len}; the table has it at "
                               f"{', '.join(map(str, lengths)) or 'no length'} (run the efficiency/analytic task there)")
            return rec
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
    rec.rows = T.order(cand)
    rec.reasons.append(f"score: {score.description}; {acc_note}")
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
    if c.objective == "accuracy" and len(pool) > 1:
        second = pool.iloc[1]
        spreads = [float(s) for s in (best["std"], second["std"]) if not pd.isna(s)]
        spread = max(spreads) if spreads else float("nan")
        if np.isnan(spread):
            rec.warnings.append("one seed per model: no spread across seeds to tell a real lead from noise")
        elif abs(best["mean"] - second["mean"]) <= spread:
            rec.warnings.append(f"tie within noise: {second['variant']} {second['layout']} is within one std "
                                f"({fmt_value(spread)}) of the choice; the table cannot separate them")
    return rec


def which_hybrid_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The report's "Which hybrid to use" table: per length with analytic cache rows, the most
    accurate learned model and the one with the smallest cache whose score is within one std
    (at least 2 % of the best) of it. Accuracy: every measured length, averaged."""
    ok = ok_rows(normalize(df))
    lengths = sorted({int(x) for x in ok.loc[ok["metric"] == "cache_bytes", "seq_len"].dropna()})
    score = T.accuracy_score(ok) if lengths else None
    out = []
    for L in lengths:
        top = _recommend(ok, Constraints(seq_len=L, objective="accuracy", accuracy_len="all"))
        if not top.answered:
            continue
        best = top.choice
        higher = score.higher_is_better
        slack = max(float(best["std"]) if not pd.isna(best["std"]) else 0.0, 0.02 * abs(float(best["mean"])))
        floor = best["mean"] - slack if higher else best["mean"] + slack
        cheap = _recommend(ok, Constraints(seq_len=L, objective="cache", min_score=floor, accuracy_len="all"))
        ch = cheap.choice or best
        out.append({"seq_len": L, "most accurate": f"{best['variant']} {best['layout']}",
                    "its score": fmt_mean_std(best["mean"], best["std"], best["n"]),
                    "its cache": fmt_value(best["cache_bytes"], "bytes"),
                    "cheapest near it": f"{ch['variant']} {ch['layout']}",
                    "score": fmt_mean_std(ch["mean"], ch["std"], ch["n"]),
                    "cache": fmt_value(ch["cache_bytes"], "bytes"),
                    "cache saved": f"{best['cache_bytes'] / ch['cache_bytes']:.3g}×" if ch["cache_bytes"] else "—"})
    return pd.DataFrame(out)
