"""Claims 3.3 (LM quality is stable across ratios) and 3.4 (the standalone ranking does not
predict the hybrid ranking), tested against the results table with ties known
(harness.report.claims has the first two and the list of all four)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import tables
from .fmt import fmt_mean_std, fmt_value, md_table
from .stats import is_tie, noisy_rank_correlation, spread_known
from .style import is_hybrid, sort_variants
from .verdicts import (
    FAILS,
    HOLDS,
    LM_STABLE_REL,
    NO_DATA,
    NO_SPREAD,
    PARTLY,
    RANK_MIN_DECIDABLE,
    RANK_STRONG,
    RANK_WEAK,
    UNDECIDED,
    Claim,
    at_most_partly,
    combine,
    width_text,
)

# --------------------------------------------------------------------------- claim 3

def _lm_stability(g: pd.DataFrame) -> tuple[str, float, float]:
    """(verdict, range, relative range) of one variant's LM score over its layouts: a relative
    range ≤ LM_STABLE_REL holds; a larger range between two layouts that tie (within the seeds'
    spread) is undecided; a larger range beyond the spread fails."""
    hi, lo = g.loc[g["mean"].idxmax()], g.loc[g["mean"].idxmin()]
    rng = hi["mean"] - lo["mean"]
    rel = rng / abs(g["mean"].mean()) if g["mean"].mean() else np.nan
    if rel <= LM_STABLE_REL:
        return HOLDS, rng, rel
    if is_tie(hi["mean"], hi["std"], lo["mean"], lo["std"]) and spread_known([hi["std"], lo["std"]]):
        return UNDECIDED, rng, rel
    return FAILS, rng, rel


def claim_lm_stable(ok: pd.DataFrame) -> Claim:
    title = "LM quality is stable across ratios"
    score = tables.lm_eval_score(ok) or tables.lm_score(ok)
    if score is None:
        return Claim(title, NO_DATA, f"No LM rows: {tables.NO_LM_ROWS}.")
    s = score.summary()
    rec = tables.recall_score(ok)
    rec_s = rec.summary() if rec is not None else None
    verdicts, notes, rows = [], [], []
    multi = len(tables.scales(s)) > 1
    for (d, v), g in s[s["variant"] != "attention"].groupby(["d_model", "variant"], dropna=False, sort=False):
        if len(g) < 2:
            continue
        verdict, rng, rel = _lm_stability(g)
        noise = np.nan_to_num(g["std"]).max()
        hyb = g[g["layout"].map(is_hybrid)]
        hyb_rel = (hyb["mean"].max() - hyb["mean"].min()) / abs(hyb["mean"].mean()) if len(hyb) > 1 else np.nan
        verdicts.append(verdict)
        row = {**({"d_model": width_text(d)} if multi else {}), "variant": v, "layouts": len(g),
               f"min {score.metric}": fmt_value(g["mean"].min(), score.unit),
               f"max {score.metric}": fmt_value(g["mean"].max(), score.unit), "range": fmt_value(rng, score.unit, 2),
               "relative range": f"{rel:.1%}", "hybrids only": "—" if np.isnan(hyb_rel) else f"{hyb_rel:.1%}",
               "max seed-std": fmt_value(noise, score.unit, 2) if noise > 0 else "—"}
        if rec_s is not None:
            rv = rec_s[(rec_s["variant"] == v) & (rec_s["d_model"].fillna(-1) == (-1 if np.isnan(d) else d))]
            row["recall range"] = fmt_value(rv["mean"].max() - rv["mean"].min(), "accuracy") if len(rv) > 1 else "—"
        row["verdict"] = verdict
        rows.append(row)
        notes.append(f"{v}{f' (d_model={width_text(d)})' if multi else ''} {rel:.1%}")
    if not verdicts:
        return Claim(title, NO_DATA, f"{score.metric} is present but no variant has it at two or more layouts.")
    summary = (f"Spread of {score.metric} across layouts (pure and hybrids) per variant; stable means a relative "
               f"range ≤ {LM_STABLE_REL:.0%} (the paper's 'less than 1%'); a larger range whose ends tie within the "
               f"seeds' spread (the sum of their stds) is **undecided**. Relative ranges: {', '.join(notes)}.")
    if rec_s is not None:
        summary += (" The recall range per variant is shown beside it for contrast (the paper: ratio moves "
                    "recall, not LM).")
    verdict = combine(verdicts)
    if verdict != NO_DATA and not spread_known(s.loc[s["variant"] != "attention", "std"]):
        verdict = at_most_partly(verdict)
        summary += f" Note: {NO_SPREAD}."
    return Claim(title, verdict, summary, md_table(pd.DataFrame(rows)))


# --------------------------------------------------------------------------- claim 4

def _pure_and_best_hybrid(sd: pd.DataFrame, sign: float) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Per variant at one width: its pure (mean, std) and its best hybrid (mean, std, layout);
    the variants that have both, in the report's order."""
    sd = sd[sd["variant"] != "attention"]
    pure = sd[sd["layout"] == "pure"].groupby("variant")[["mean", "std", "n"]].mean()
    hyb = sd[sd["layout"].map(is_hybrid)].assign(key=lambda x: sign * x["mean"])
    if hyb.empty or pure.empty:
        return pure, hyb, None
    best = hyb.loc[hyb.groupby("variant")["key"].idxmax()].set_index("variant")
    return pure, best, [v for v in sort_variants(pure.index) if v in best.index]


def _corr(x: float) -> str:
    return "undefined (all tied)" if np.isnan(x) else f"{x:+.2f}"


def _rank_verdict(r: dict, known: bool) -> tuple[str, str]:
    """(verdict, why) from a noisy rank correlation (stats.noisy_rank_correlation)."""
    if r["n_pairs"] and known and r["n_decidable"] < RANK_MIN_DECIDABLE * r["n_pairs"]:
        return UNDECIDED, (f"only {r['n_decidable']} of {r['n_pairs']} pairs are ordered beyond the seeds' "
                           "spread in both rankings; the rest are ties, so the ranks are mostly noise")
    rho = r["rho"]
    if np.isnan(rho):
        return UNDECIDED, "every variant ties in one of the rankings: no order to correlate"
    return (HOLDS if rho < RANK_WEAK else PARTLY if rho < RANK_STRONG else FAILS), ""


def claim_ranking(ok: pd.DataFrame) -> Claim:
    title = "The standalone ranking of variants does not predict the hybrid ranking"
    scores = tables.all_scores(ok)
    if not scores:
        return Claim(title, NO_DATA, "No accuracy rows (recall_acc, lm-eval or LM loss) with status ok.")
    verdicts, notes, rows, no_spread = [], [], [], False
    for score in scores:
        s = score.learned_summary()  # an unlearned model has no rank worth correlating
        sign = 1.0 if score.higher_is_better else -1.0
        for d in tables.scales(s):
            pure, best, common = _pure_and_best_hybrid(tables.at_scale(s, d), sign)
            if common is None:
                continue
            if len(common) < 3:
                notes.append(f"{score.metric}: only {len(common)} variant(s) have both pure and hybrid rows")
                continue
            known = spread_known([*pure.loc[common, "std"], *best.loc[common, "std"]])
            no_spread |= not known
            r = noisy_rank_correlation(sign * pure.loc[common, "mean"].values, pure.loc[common, "std"].values,
                                       sign * best.loc[common, "mean"].values, best.loc[common, "std"].values)
            verdict, why = _rank_verdict(r, known)
            verdicts.append(verdict)
            scale = "" if len(tables.scales(s)) == 1 else f" (d_model={width_text(d)})"
            rank_a, rank_b = pd.Series(r["ranks_a"], index=common), pd.Series(r["ranks_b"], index=common)
            notes.append(f"{score.metric}{scale}: Spearman ρ = {_corr(r['rho'])}, Kendall τ-b = {_corr(r['tau'])} over "
                         f"{len(common)} variants on tied ranks; {r['n_decidable']} of {r['n_pairs']} pairs decidable "
                         f"({r['n_concordant']} concordant, {r['n_discordant']} discordant); best pure = "
                         f"{', '.join(rank_a[rank_a == rank_a.min()].index)}, best hybrid = "
                         f"{', '.join(rank_b[rank_b == rank_b.min()].index)}"
                         + (f" — **undecided**: {why}" if why else ""))
            for v in common:
                rows.append({"score": score.metric + scale, "variant": v,
                             "pure": fmt_mean_std(*pure.loc[v, ["mean", "std", "n"]], score.unit),
                             "rank pure": f"{rank_a[v]:g}",
                             "best hybrid": f"{fmt_mean_std(*best.loc[v, ['mean', 'std', 'n']], score.unit)} "
                                            f"({best.loc[v, 'layout']})",
                             "rank hybrid": f"{rank_b[v]:g}"})
    if not verdicts:
        msg = "; ".join(notes) if notes else "no variant has both pure and hybrid accuracy rows"
        return Claim(title, NO_DATA, f"Needs ≥ 3 variants with pure and hybrid accuracy: {msg}.")
    summary = (f"Rank correlation between each variant's pure score and its best-hybrid score. Two variants tie "
               "(share a rank) when their scores differ by no more than the seeds' spread (the sum of their stds); "
               "a pair is decidable when it is ordered beyond the spread in both rankings, and with fewer than "
               f"{RANK_MIN_DECIDABLE:.0%} of the pairs decidable the verdict is **undecided**. Otherwise 'does not "
               f"predict' holds for ρ < {RANK_WEAK}, partly for {RANK_WEAK} ≤ ρ < {RANK_STRONG}, fails for "
               f"ρ ≥ {RANK_STRONG}. " + "; ".join(notes) + ".")
    verdict = combine(verdicts)
    if no_spread:
        verdict = at_most_partly(verdict)
        summary += f" Note: {NO_SPREAD}."
    return Claim(title, verdict, summary, md_table(pd.DataFrame(rows)))
