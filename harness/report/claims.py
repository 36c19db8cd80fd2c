"""Test the paper's (and the harness's) stated claims against the results table.

Each claim returns a `Claim` with a verdict ("holds", "fails", "partly", "no data"), one sentence
with the numbers, and an optional Markdown table of the per-point evidence. Thresholds are stated
in the sentence so a reader can disagree with them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import cost_tables as CT
from . import tables as T
from .fmt import fmt_delta, fmt_value, md_table
from .stats import kendall_tau_b, spearman
from .style import attn_fraction, is_hybrid, sort_layouts, sort_variants

HOLDS, FAILS, PARTLY, NO_DATA = "holds", "fails", "partly", "no data"

SPEEDUP_MIN = 1.30  # "≥ 30 % faster": Transformer time / hybrid time ≥ 1.30
MEM_SAVING_MIN = 0.40  # "≥ 40 % less memory": 1 − hybrid / Transformer ≥ 0.40
SATURATION_TOL = 0.02  # recall points counted as "no real gain" (or 1 seed-std if larger)
LM_STABLE_REL = 0.01  # the paper's "less than 1 %" across ratios
RANK_WEAK, RANK_STRONG = 0.4, 0.8  # Spearman ρ below / above: does not / does predict


@dataclass
class Claim:
    title: str
    verdict: str
    summary: str
    details: str = ""


def combine(verdicts: list[str]) -> str:
    v = [x for x in verdicts if x != NO_DATA]
    if not v:
        return NO_DATA
    if all(x == HOLDS for x in v):
        return HOLDS
    if all(x == FAILS for x in v):
        return FAILS
    return PARTLY


def _dm(d) -> str:
    return "?" if d is None or (isinstance(d, float) and np.isnan(d)) else str(int(d))


def _fmt_lens(lens) -> str:
    lens = sorted(int(x) for x in set(lens))
    return "L=" + ",".join(str(x) for x in lens)


# --------------------------------------------------------------------------- claim 1

def _where(points: pd.DataFrame) -> str:
    """'3:1: gla, hgrn2 at L=1024,4096; deltanet at L=4096 · 6:1: ...' (variants grouped by length set)."""
    out = []
    for lay in sort_layouts(points["layout"]):
        p = points[points["layout"] == lay]
        groups: dict[str, list[str]] = {}
        for v in sort_variants(p["variant"]):
            groups.setdefault(_fmt_lens(p.loc[p["variant"] == v, "seq_len"].dropna()), []).append(v)
        out.append(f"{lay}: " + "; ".join(f"{', '.join(vs)} at {lens}" for lens, vs in groups.items()))
    return " · ".join(out)


def _ratio_table(ok: pd.DataFrame, metrics: list[str]) -> tuple[str | None, pd.DataFrame]:
    """The first metric with hybrid-vs-Transformer pairs; ratio averaged per (d_model, variant, layout, seq_len)."""
    for m in metrics:
        vt = CT.vs_transformer(ok, m)
        if vt.empty:
            continue
        vt = vt[vt["layout"].map(is_hybrid) & (vt["tf_mean"] > 0) & (vt["mean"] > 0)]
        if vt.empty:
            continue
        g = vt.groupby(["d_model", "variant", "layout", "seq_len"], dropna=False)["ratio"].mean().reset_index()
        return m, g
    return None, pd.DataFrame()


def claim_faster_and_smaller(ok: pd.DataFrame) -> Claim:
    title = "A hybrid processes ≥ 30% faster and uses ≥ 40% less memory than the Transformer"
    tmetric, tt = _ratio_table(ok, ["train_step_s", "prefill_s"])
    mmetric, mm = _ratio_table(ok, ["peak_mem_bytes", "cache_bytes"])
    if tmetric is None and mmetric is None:
        return Claim(title, NO_DATA, "No hybrid and Transformer measured at the same length and width for "
                     "train_step_s / prefill_s or peak_mem_bytes / cache_bytes.")
    keys = ["d_model", "variant", "layout", "seq_len"]
    if tmetric is not None:
        tt = tt.assign(speedup=1.0 / tt["ratio"]).drop(columns="ratio")
    if mmetric is not None:
        mm = mm.assign(mem_saving=1.0 - mm["ratio"]).drop(columns="ratio")
    if tmetric is not None and mmetric is not None:
        pts = tt.merge(mm, on=keys, how="outer")
    else:
        pts = tt if tmetric is not None else mm
    if "speedup" not in pts:
        pts["speedup"] = np.nan
    if "mem_saving" not in pts:
        pts["mem_saving"] = np.nan
    fast = pts["speedup"] >= SPEEDUP_MIN
    small = pts["mem_saving"] >= MEM_SAVING_MIN
    if tmetric is not None and mmetric is not None:
        judged = pts["speedup"].notna() & pts["mem_saving"].notna()
        ok_pt = fast & small
    else:
        judged = pts["speedup"].notna() if tmetric is not None else pts["mem_saving"].notna()
        ok_pt = fast if tmetric is not None else small
    pts["holds"] = np.where(judged, ok_pt, np.nan)
    # accuracy cost at each point: model score minus the Transformer's (same width)
    score = T.accuracy_score(ok)
    if score is not None:
        s = score.summary()
        tf = s[s["variant"] == "attention"].groupby("d_model", dropna=False)["mean"].mean()
        own = s.set_index(["d_model", "variant", "layout"])["mean"]
        pts["acc_delta"] = [own.get((d, v, l), np.nan) - tf.get(d, np.nan)
                            for d, v, l in zip(pts["d_model"], pts["variant"], pts["layout"])]
    else:
        pts["acc_delta"] = np.nan
    pts = T.order(pts)
    n_judged = int(judged.sum())
    hold = pts[pts["holds"] == 1.0]
    if n_judged == 0:
        verdict = NO_DATA
    elif len(hold) == n_judged:
        verdict = HOLDS
    elif len(hold) == 0:
        verdict = FAILS
    else:
        verdict = PARTLY
    missing = []
    if tmetric is None:
        missing.append("speed (no train_step_s/prefill_s pairs)")
    if mmetric is None:
        missing.append("memory (no peak_mem_bytes/cache_bytes pairs)")
    if missing and verdict == HOLDS:
        verdict = PARTLY
    parts = [f"Thresholds: speed-up = Transformer {tmetric or 'time'} / hybrid ≥ {SPEEDUP_MIN:.2f}×; "
             f"memory saving = 1 − hybrid {mmetric or 'memory'} / Transformer ≥ {MEM_SAVING_MIN:.0%}, "
             "at the same length and d_model."]
    parts.append(f"Both hold at {len(hold)} of {n_judged} (variant, ratio, length) points" if not missing
                 else f"Holds at {len(hold)} of {n_judged} points (only one half could be tested)")
    if len(hold):
        parts[-1] += ": " + _where(hold) + "."
    else:
        parts[-1] += "."
    miss = pts[pts["holds"] == 0.0]
    if len(miss) and len(hold):
        parts.append("Not met at: " + _where(miss) + ".")
    if tmetric is not None:
        parts.append(f"Speed-up over all hybrid points ranges {pts['speedup'].min():.2f}–{pts['speedup'].max():.2f}×.")
    if mmetric is not None:
        parts.append(f"Memory saving ranges {pts['mem_saving'].min():.0%} to {pts['mem_saving'].max():.0%}.")
    if score is not None and len(hold) and hold["acc_delta"].notna().any():
        d = hold["acc_delta"]
        parts.append(f"Accuracy cost where it holds ({score.metric} minus the Transformer's): "
                     f"{d.min():+.3f} to {d.max():+.3f} (mean {d.mean():+.3f}).")
    elif score is None:
        parts.append("Accuracy cost: no accuracy rows to weigh it against.")
    if missing:
        parts.append("Not measurable: " + "; ".join(missing) + "; so the verdict is at most 'partly'.")
    # evidence table: rows = (d_model, variant, layout), cols = lengths
    rows = []
    for (d, v, lay), g in pts.groupby(["d_model", "variant", "layout"], dropna=False, sort=False):
        row = {"variant": v, "layout": lay}
        if pts["d_model"].nunique() > 1:
            row = {"d_model": d, **row}
        for r in g.itertuples(index=False):
            cell = []
            if not np.isnan(r.speedup):
                cell.append(f"{r.speedup:.2f}×")
            if not np.isnan(r.mem_saving):
                cell.append(f"{-r.mem_saving:+.0%} mem")
            if r.holds == 1.0:
                cell.append("✓")
            row[f"L={int(r.seq_len)}" if not np.isnan(r.seq_len) else "L=?"] = " ".join(cell)
        if score is not None:
            row[f"Δ {score.metric} vs Transformer"] = fmt_delta(g["acc_delta"].iloc[0], score.unit)
        rows.append(row)
    details = ""
    if rows:
        df = pd.DataFrame(rows).fillna("")
        met = "both thresholds met" if not missing else "the tested threshold met"
        details = (f"Cells: speed-up (× Transformer) and memory change vs the Transformer; ✓ = {met}.\n\n"
                   + md_table(df))
    return Claim(title, verdict, " ".join(parts), details)


# --------------------------------------------------------------------------- claim 2

_SAT_TAIL = ["transformer", "3:1 → denser", "3:1 − Transformer", "saturates at", "verdict"]


def claim_recall_saturates(ok: pd.DataFrame) -> Claim:
    title = "Recall saturates around 3:1"
    score = T.recall_score(ok)
    if score is None:
        return Claim(title, NO_DATA, "No recall_acc rows with status ok.")
    s = score.summary()
    verdicts, notes, rows = [], [], []
    multi = len(T.scales(s)) > 1
    for d in T.scales(s):
        sd = T.at_scale(s, d)
        tf = sd[(sd["variant"] == "attention") & sd["learned"]]  # an unlearned Transformer is no reference
        for v in sort_variants(sd["variant"]):
            if v == "attention":
                continue
            sv = sd[sd["variant"] == v].set_index("layout")
            row = {**({"d_model": _dm(d)} if multi else {}), "variant": v,
                   **{lay: fmt_value(sv.loc[lay, "mean"], "accuracy") + ("" if sv.loc[lay, "learned"] else " †")
                      for lay in sort_layouts(sv.index)}}
            if len(tf):
                row["transformer"] = fmt_value(tf["mean"].mean(), "accuracy")
            if "3:1" not in sv.index:
                row["verdict"] = "no 3:1"
                rows.append(row)
                verdicts.append(NO_DATA)
                continue
            if not sv.loc["3:1", "learned"]:
                row["verdict"] = "3:1 not learned"
                rows.append(row)
                verdicts.append(NO_DATA)
                continue
            r3, s3 = sv.loc["3:1", "mean"], np.nan_to_num(sv.loc["3:1", "std"])
            # denser: the variant's own layouts with more attention than 3:1; the Transformer only if none
            dense = [(lay, sv.loc[lay, "mean"], np.nan_to_num(sv.loc[lay, "std"]))
                     for lay in sv.index if attn_fraction(lay) > 0.25 and sv.loc[lay, "learned"]]
            if not dense:
                dense = [("transformer", m, np.nan_to_num(sd_)) for m, sd_ in zip(tf["mean"], tf["std"])]
            if not dense:
                row["verdict"] = "no denser layout"
                rows.append(row)
                verdicts.append(NO_DATA)
                continue
            best_dense = max(dense, key=lambda t: t[1])
            tol = max(SATURATION_TOL, float(np.hypot(s3, best_dense[2])))
            gain = best_dense[1] - r3
            top = max(r3, best_dense[1])  # the level recall saturates at
            cand = sorted([lay for lay in sv.index if attn_fraction(lay) <= 0.25], key=attn_fraction)
            sat = next((lay for lay in cand if sv.loc[lay, "learned"] and sv.loc[lay, "mean"] >= top - tol), "3:1")
            row["3:1 → denser"] = f"{fmt_delta(gain, 'accuracy')} ({best_dense[0]})"
            row["3:1 − Transformer"] = fmt_delta(r3 - tf["mean"].mean(), "accuracy") if len(tf) else "—"
            row["saturates at"] = sat if gain <= tol else "not by 3:1"
            name = f"{v} (d_model={_dm(d)})" if multi else v
            if gain > tol:
                verdict = FAILS
                notes.append(f"{name}: still rising past 3:1 ({fmt_delta(gain, 'accuracy')} at {best_dense[0]})")
            elif sat in ("3:1", "6:1"):
                verdict = HOLDS
                notes.append(f"{name}: flat beyond 3:1 ({fmt_delta(gain, 'accuracy')} at {best_dense[0]}), "
                             f"first reached at {sat}")
            else:
                verdict = FAILS
                notes.append(f"{name}: saturates earlier, already at {sat}")
            if len(tf):
                notes[-1] += f", {fmt_delta(r3 - tf['mean'].mean(), 'accuracy')} vs the Transformer at 3:1"
            row["verdict"] = verdict
            verdicts.append(verdict)
            rows.append(row)
    verdict = combine(verdicts)
    summary = (f"Per variant, recall at 3:1 ({score.description}) is compared with the variant's denser layouts "
               f"(e.g. 1:1; the Transformer when there is none) and sparser ones; a change within {SATURATION_TOL:.2f} "
               "(or one combined seed-std, if larger) counts as flat. Saturation 'around 3:1' means flat "
               "beyond 3:1 and first reached at 6:1 or 3:1. Models that did not learn (†, at or below the "
               "plateau) are no evidence either way and are left out. ")
    summary += ("; ".join(notes) + ".") if notes else "No variant had both a 3:1 layout and a denser one."
    details = ""
    if rows:
        df = pd.DataFrame(rows).fillna("")
        lays = sort_layouts([c for c in df.columns if c not in _SAT_TAIL + ["d_model", "variant"]])
        df = df[[c for c in ["d_model", "variant"] if c in df.columns] + lays + [c for c in _SAT_TAIL if c in df.columns]]
        details = md_table(df)
    return Claim(title, verdict, summary, details)


# --------------------------------------------------------------------------- claim 3

def claim_lm_stable(ok: pd.DataFrame) -> Claim:
    title = "LM quality is stable across ratios"
    score = T.lm_eval_score(ok) or T.lm_score(ok)
    if score is None:
        return Claim(title, NO_DATA, "No lm-eval, val_loss, val_bpb, val_ppl or final_loss rows with status ok.")
    s = score.summary()
    rec = T.recall_score(ok)
    rec_s = rec.summary() if rec is not None else None
    verdicts, notes, rows = [], [], []
    multi = len(T.scales(s)) > 1
    for (d, v), g in s[s["variant"] != "attention"].groupby(["d_model", "variant"], dropna=False, sort=False):
        if len(g) < 2:
            continue
        rng = g["mean"].max() - g["mean"].min()
        rel = rng / abs(g["mean"].mean()) if g["mean"].mean() else np.nan
        noise = np.nan_to_num(g["std"]).max()
        hyb = g[g["layout"].map(is_hybrid)]
        hyb_rel = (hyb["mean"].max() - hyb["mean"].min()) / abs(hyb["mean"].mean()) if len(hyb) > 1 else np.nan
        stable = (rel <= LM_STABLE_REL) or (noise > 0 and rng <= 2 * noise)
        verdict = HOLDS if stable else FAILS
        verdicts.append(verdict)
        row = {**({"d_model": _dm(d)} if multi else {}), "variant": v, "layouts": len(g), f"min {score.metric}": fmt_value(g["mean"].min(), score.unit),
               f"max {score.metric}": fmt_value(g["mean"].max(), score.unit), "range": fmt_value(rng, score.unit, 2),
               "relative range": f"{rel:.1%}", "hybrids only": "—" if np.isnan(hyb_rel) else f"{hyb_rel:.1%}",
               "max seed-std": fmt_value(noise, score.unit, 2) if noise > 0 else "—"}
        if rec_s is not None:
            rv = rec_s[(rec_s["variant"] == v) & (rec_s["d_model"].fillna(-1) == (-1 if np.isnan(d) else d))]
            row["recall range"] = fmt_value(rv["mean"].max() - rv["mean"].min(), "accuracy") if len(rv) > 1 else "—"
        row["verdict"] = verdict
        rows.append(row)
        notes.append(f"{v}{f' (d_model={_dm(d)})' if multi else ''} {rel:.1%}")
    if not verdicts:
        return Claim(title, NO_DATA, f"{score.metric} is present but no variant has it at two or more layouts.")
    summary = (f"Spread of {score.metric} across layouts (pure and hybrids) per variant; stable means a relative "
               f"range ≤ {LM_STABLE_REL:.0%} (the paper's 'less than 1%') or a range within twice the seed "
               f"std. Relative ranges: {', '.join(notes)}.")
    if rec_s is not None:
        summary += " The recall range per variant is shown beside it for contrast (the paper: ratio moves recall, not LM)."
    return Claim(title, combine(verdicts), summary, md_table(pd.DataFrame(rows)))


# --------------------------------------------------------------------------- claim 4

def claim_ranking(ok: pd.DataFrame) -> Claim:
    title = "The standalone ranking of variants does not predict the hybrid ranking"
    scores = T.all_scores(ok)
    if not scores:
        return Claim(title, NO_DATA, "No accuracy rows (recall_acc, lm-eval or LM loss) with status ok.")
    verdicts, notes, rows = [], [], []
    for score in scores:
        s = score.learned_summary()  # an unlearned model has no rank worth correlating
        sign = 1.0 if score.higher_is_better else -1.0
        for d in T.scales(s):
            sd = T.at_scale(s, d)
            sd = sd[sd["variant"] != "attention"]
            pure = sd[sd["layout"] == "pure"].groupby("variant")["mean"].mean()
            hyb = sd[sd["layout"].map(is_hybrid)].copy()
            if hyb.empty or pure.empty:
                continue
            hyb["key"] = sign * hyb["mean"]
            best = hyb.loc[hyb.groupby("variant")["key"].idxmax()].set_index("variant")
            common = [v for v in sort_variants(pure.index) if v in best.index]
            if len(common) < 3:
                notes.append(f"{score.metric}: only {len(common)} variant(s) have both pure and hybrid rows")
                continue
            a = sign * pure.loc[common].values
            b = sign * best.loc[common, "mean"].values
            rho, tau = spearman(a, b), kendall_tau_b(a, b)
            rank_a = pd.Series(a, index=common).rank(ascending=False, method="min")
            rank_b = pd.Series(b, index=common).rank(ascending=False, method="min")
            top_a, top_b = rank_a.idxmin(), rank_b.idxmin()
            if np.isnan(rho):
                verdict = NO_DATA
            elif rho < RANK_WEAK:
                verdict = HOLDS
            elif rho < RANK_STRONG:
                verdict = PARTLY
            else:
                verdict = FAILS
            verdicts.append(verdict)
            scale = "" if len(T.scales(s)) == 1 else f" (d_model={int(d) if not np.isnan(d) else '?'})"
            notes.append(f"{score.metric}{scale}: Spearman ρ = {rho:+.2f}, Kendall τ = {tau:+.2f} over "
                         f"{len(common)} variants; best pure = {top_a}, best hybrid = {top_b} "
                         f"({best.loc[top_b, 'layout']})")
            for v in common:
                rows.append({"score": score.metric + scale, "variant": v,
                             "pure": fmt_value(pure.loc[v], score.unit), "rank pure": int(rank_a[v]),
                             "best hybrid": f"{fmt_value(best.loc[v, 'mean'], score.unit)} ({best.loc[v, 'layout']})",
                             "rank hybrid": int(rank_b[v])})
    if not verdicts:
        msg = "; ".join(notes) if notes else "no variant has both pure and hybrid accuracy rows"
        return Claim(title, NO_DATA, f"Needs ≥ 3 variants with pure and hybrid accuracy: {msg}.")
    summary = (f"Rank correlation between each variant's pure score and its best-hybrid score; 'does not "
               f"predict' holds for ρ < {RANK_WEAK}, partly for {RANK_WEAK} ≤ ρ < {RANK_STRONG}, fails for "
               f"ρ ≥ {RANK_STRONG}. " + "; ".join(notes) + ".")
    return Claim(title, combine(verdicts), summary, md_table(pd.DataFrame(rows)))


def all_claims(ok: pd.DataFrame) -> list[Claim]:
    return [claim_faster_and_smaller(ok), claim_recall_saturates(ok), claim_lm_stable(ok), claim_ranking(ok)]
