"""Test the paper's (and the harness's) stated claims against the results table: 3.1 and 3.2 here,
3.3 and 3.4 in harness.report.claims_lm_rank, the verdicts in harness.report.verdicts.

Each claim returns a `Claim` with a verdict ("holds", "fails", "partly", "undecided", "no data"),
one sentence with the numbers, and an optional Markdown table of the per-point evidence. Thresholds
are stated in the sentence so a reader can disagree with them.

Verdicts know noise (harness.report.stats): a difference within the seeds' spread is a tie, and a
verdict that would rest on ties is **undecided**, with the reason. With one seed no spread is
known: the summary says so and the verdict is at most "partly".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import cost_tables, tables
from .claims_lm_rank import claim_lm_stable, claim_ranking
from .fmt import fmt_delta, fmt_value, md_table
from .stats import is_tie, spread_known, tie_tolerance
from .style import attn_fraction, is_hybrid, sort_layouts, sort_variants
from .verdicts import (
    FAILS,
    HOLDS,
    MEM_SAVING_MIN,
    NO_DATA,
    NO_SPREAD,
    PARTLY,
    SATURATION_TOL,
    SPEEDUP_MIN,
    UNDECIDED,
    Claim,
    at_most_partly,
    combine,
    lens_text,
    width_text,
)

# --------------------------------------------------------------------------- claim 1

def _where(points: pd.DataFrame) -> str:
    """'3:1: gla, hgrn2 at L=1024,4096; deltanet at L=4096 · 6:1: ...' (variants grouped by length set)."""
    out = []
    for lay in sort_layouts(points["layout"]):
        p = points[points["layout"] == lay]
        groups: dict[str, list[str]] = {}
        for v in sort_variants(p["variant"]):
            groups.setdefault(lens_text(p.loc[p["variant"] == v, "seq_len"].dropna()), []).append(v)
        out.append(f"{lay}: " + "; ".join(f"{', '.join(vs)} at {lens}" for lens, vs in groups.items()))
    return " · ".join(out)


def _ratio_table(ok: pd.DataFrame, metrics: list[str]) -> tuple[str | None, pd.DataFrame]:
    """The first metric with hybrid-vs-Transformer pairs; ratio averaged per (d_model, variant,
    layout, seq_len), with `rel_unc`, the ratio's relative uncertainty (the two seed stds over
    their means, summed; 0 for analytic metrics, which are exact) and `no_spread` (a measured
    value from one seed)."""
    for m in metrics:
        vt = cost_tables.vs_transformer(ok, m)
        if vt.empty:
            continue
        vt = vt[vt["layout"].map(is_hybrid) & (vt["tf_mean"] > 0) & (vt["mean"] > 0)]
        if vt.empty:
            continue
        exact = m in tables.ANALYTIC_METRICS
        vt = vt.assign(rel_unc=0.0 if exact else np.nan_to_num(vt["std"] / vt["mean"])
                       + np.nan_to_num(vt["tf_std"] / vt["tf_mean"]),
                       no_spread=False if exact else vt["std"].isna() | vt["tf_std"].isna())
        g = vt.groupby(["d_model", "variant", "layout", "seq_len"], dropna=False).agg(
            ratio=("ratio", "mean"), rel_unc=("rel_unc", "max"), no_spread=("no_spread", "any")).reset_index()
        return m, g
    return None, pd.DataFrame()


def _threshold_state(value: pd.Series, threshold: float, unc: pd.Series) -> pd.Series:
    """Per point: 1 meets `threshold`, −1 misses it, 0 undecided (the threshold lies within the
    value's spread, value × unc), NaN not measured."""
    state = np.where(value >= threshold, 1.0, -1.0)
    state = np.where((value - threshold).abs() <= value.abs() * unc.fillna(0), 0.0, state)
    return pd.Series(np.where(value.isna(), np.nan, state), index=value.index)


def _points_verdict(states: pd.Series, n_undecided_note: list[str]) -> str:
    """The claim's verdict from the points' states (1 / −1 / 0 / NaN)."""
    judged = states.dropna()
    verdicts = [HOLDS if x > 0 else FAILS if x < 0 else UNDECIDED for x in judged]
    n_und = sum(v == UNDECIDED for v in verdicts)
    if n_und:
        n_undecided_note.append(f"{n_und} of {len(verdicts)} points are **undecided**: the threshold lies within "
                                "the seeds' spread of their ratio")
    return combine(verdicts)


def _claim1_points(tt: pd.DataFrame, mm: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Claim 3.1's points: speedup and mem_saving (NaN where not measured) and each half's state
    against its threshold (`_threshold_state`), plus `no_spread`."""
    parts = []
    if not tt.empty:
        parts.append(tt.assign(speedup=1.0 / tt["ratio"], speed_state=_threshold_state(
            1.0 / tt["ratio"], SPEEDUP_MIN, tt["rel_unc"])).drop(columns=["ratio", "rel_unc"]))
    if not mm.empty:
        # saving ≥ MEM_SAVING_MIN ⇔ ratio ≤ 1 − MEM_SAVING_MIN; its spread is the ratio's
        parts.append(mm.assign(mem_saving=1.0 - mm["ratio"], mem_state=_threshold_state(
            (1.0 - MEM_SAVING_MIN) / mm["ratio"], 1.0, mm["rel_unc"])).drop(columns=["ratio", "rel_unc"]))
    pts = parts[0] if len(parts) == 1 else parts[0].merge(parts[1], on=keys, how="outer", suffixes=("", "_m"))
    if "no_spread_m" in pts:
        pts["no_spread"] = pts["no_spread"].fillna(False) | pts.pop("no_spread_m").fillna(False)
    for c in ("speedup", "mem_saving", "speed_state", "mem_state"):
        if c not in pts:
            pts[c] = np.nan
    return pts


def _claim1_evidence(pts: pd.DataFrame, score, both: bool) -> str:
    """Claim 3.1's evidence table: rows = (d_model, variant, layout), columns = lengths."""
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
            elif r.state == 0:
                cell.append("≈ (undecided)")
            row[f"L={int(r.seq_len)}" if not np.isnan(r.seq_len) else "L=?"] = " ".join(cell)
        if score is not None:
            row[f"Δ {score.metric} vs Transformer"] = fmt_delta(g["acc_delta"].iloc[0], score.unit)
        rows.append(row)
    if not rows:
        return ""
    met = "both thresholds met" if both else "the tested threshold met"
    return (f"Cells: speed-up (× Transformer) and memory change vs the Transformer; ✓ = {met}; ≈ = the threshold "
            "lies within the seeds' spread.\n\n" + md_table(pd.DataFrame(rows).fillna("")))


def claim_faster_and_smaller(ok: pd.DataFrame) -> Claim:
    title = "A hybrid processes ≥ 30% faster and uses ≥ 40% less memory than the Transformer"
    tmetric, tt = _ratio_table(ok, ["train_step_s", "prefill_s"])
    mmetric, mm = _ratio_table(ok, ["peak_mem_bytes", "cache_bytes"])
    if tmetric is None and mmetric is None:
        return Claim(title, NO_DATA, "No hybrid and Transformer measured at the same length and width for "
                     "train_step_s / prefill_s or peak_mem_bytes / cache_bytes.")
    pts = _claim1_points(tt, mm, ["d_model", "variant", "layout", "seq_len"])
    pts["state"] = pts[["speed_state", "mem_state"]].min(axis=1, skipna=True)  # a miss outweighs a tie
    if tmetric is not None and mmetric is not None:
        pts.loc[pts["speed_state"].isna() | pts["mem_state"].isna(), "state"] = np.nan  # both halves needed
    pts["holds"] = pts["state"].map(lambda x: np.nan if np.isnan(x) or x == 0 else float(x > 0))
    score = tables.accuracy_score(ok)
    pts = tables.order(_with_accuracy_cost(pts, score))
    missing = []
    if tmetric is None:
        missing.append("speed (no train_step_s/prefill_s pairs)")
    if mmetric is None:
        missing.append("memory (no peak_mem_bytes/cache_bytes pairs)")
    verdict, noise_notes = _claim1_verdict(pts, missing)
    parts = _claim1_summary(pts, tmetric, mmetric, score, missing)
    parts += [n[0].upper() + n[1:] + "." for n in noise_notes]
    return Claim(title, verdict, " ".join(parts), _claim1_evidence(pts, score, both=not missing))


def _with_accuracy_cost(pts: pd.DataFrame, score: tables.Score | None) -> pd.DataFrame:
    """`pts` with `acc_delta`: the model's accuracy score minus the Transformer's at its width
    (NaN without accuracy rows)."""
    if score is None:
        return pts.assign(acc_delta=np.nan)
    s = score.summary()
    tf = s[s["variant"] == "attention"].groupby("d_model", dropna=False)["mean"].mean()
    own = s.set_index(["d_model", "variant", "layout"])["mean"]
    return pts.assign(acc_delta=[own.get((d, v, l), np.nan) - tf.get(d, np.nan)
                                 for d, v, l in zip(pts["d_model"], pts["variant"], pts["layout"])])


def _claim1_verdict(pts: pd.DataFrame, missing: list[str]) -> tuple[str, list[str]]:
    """(claim 3.1's verdict, the notes on noise behind it): at most partly where a judged point
    has one seed or one half of the claim could not be measured (`missing`)."""
    noise_notes: list[str] = []
    verdict = _points_verdict(pts["state"], noise_notes)
    if pts.loc[pts["state"].notna(), "no_spread"].fillna(False).any():
        verdict = at_most_partly(verdict)
        noise_notes.append("some measured points come from one seed: no spread is known there, so the verdict "
                           "is at most 'partly'")
    if missing and verdict == HOLDS:
        verdict = PARTLY
    return verdict, noise_notes


def _claim1_summary(pts: pd.DataFrame, tmetric: str | None, mmetric: str | None, score: tables.Score | None,
                    missing: list[str]) -> list[str]:
    """Claim 3.1's sentences: the thresholds, where both hold and where not, the ranges, the
    accuracy cost where it holds, and what could not be measured."""
    hold = pts[pts["holds"] == 1.0]
    parts = [f"Thresholds: speed-up = Transformer {tmetric or 'time'} / hybrid ≥ {SPEEDUP_MIN:.2f}×; "
             f"memory saving = 1 − hybrid {mmetric or 'memory'} / Transformer ≥ {MEM_SAVING_MIN:.0%}, "
             "at the same length and d_model."]
    n_judged = int(pts["state"].notna().sum())
    parts.append(f"Both hold at {len(hold)} of {n_judged} (variant, ratio, length) points" if not missing
                 else f"Holds at {len(hold)} of {n_judged} points (only one half could be tested)")
    parts[-1] += ": " + _where(hold) + "." if len(hold) else "."
    miss = pts[pts["holds"] == 0.0]
    if len(miss) and len(hold):
        parts.append("Not met at: " + _where(miss) + ".")
    if tmetric is not None:
        parts.append(f"Speed-up over all hybrid points ranges {pts['speedup'].min():.2f}–"
                     f"{pts['speedup'].max():.2f}×.")
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
    return parts


# --------------------------------------------------------------------------- claim 2

_SAT_TAIL = ["transformer", "3:1 → denser", "3:1 − Transformer", "saturates at", "verdict"]


def _saturation(sv: pd.DataFrame, dense: list[tuple]) -> tuple[str, str, str]:
    """(verdict, where it saturates, why) for one variant's layouts `sv` (index layout; mean, std,
    learned) against its denser layouts `dense` [(name, mean, std)]: rising past 3:1 beyond the
    seeds' spread and SATURATION_TOL fails; a gain above the floor but within the spread is
    undecided; flat and first reached at 6:1 or 3:1 holds, earlier fails; a sparse layout that
    already ties with the top (a ceiling: the task does not separate) is undecided."""
    r3, s3 = sv.loc["3:1", "mean"], sv.loc["3:1", "std"]
    name, md, sd = max(dense, key=lambda t: t[1])
    gain = md - r3
    if gain > tie_tolerance(s3, sd, SATURATION_TOL):
        return FAILS, "not by 3:1", f"still rising past 3:1 ({fmt_delta(gain, 'accuracy')} at {name})"
    if gain > SATURATION_TOL:
        why = (f"{fmt_delta(gain, 'accuracy')} at {name} is within the seeds' spread "
               f"(± {tie_tolerance(s3, sd):.3f}): rising or flat cannot be told")
        return UNDECIDED, "—", why
    top, top_std = (r3, s3) if r3 >= md else (md, sd)
    sparse = sorted([lay for lay in sv.index if attn_fraction(lay) <= 0.25], key=attn_fraction)
    sat = next((lay for lay in sparse if sv.loc[lay, "learned"]
                and is_tie(sv.loc[lay, "mean"], sv.loc[lay, "std"], top, top_std, SATURATION_TOL)), "3:1")
    flat = f"flat beyond 3:1 ({fmt_delta(gain, 'accuracy')} at {name})"
    if attn_fraction(sat) == 0.0:
        why = (f"{flat}, but pure already ties with the top: the task saturates without attention and cannot "
               "show where added attention stops helping")
        return UNDECIDED, sat, why
    if sat in ("3:1", "6:1"):
        return HOLDS, sat, f"{flat}, first reached at {sat}"
    return FAILS, sat, f"{flat}, but reached earlier, at {sat}"


def _saturation_row(sd: pd.DataFrame, v: str, tf: pd.DataFrame) -> tuple[str, dict, str]:
    """(verdict, table row, note) of one variant at one width."""
    sv = sd[sd["variant"] == v].set_index("layout")
    row = {"variant": v, **{lay: fmt_value(sv.loc[lay, "mean"], "accuracy") + ("" if sv.loc[lay, "learned"] else " †")
                            for lay in sort_layouts(sv.index)}}
    if len(tf):
        row["transformer"] = fmt_value(tf["mean"].mean(), "accuracy")
    if "3:1" not in sv.index or not sv.loc["3:1", "learned"]:
        row["verdict"] = "no 3:1" if "3:1" not in sv.index else "3:1 not learned"
        return NO_DATA, row, ""
    # denser: the variant's own layouts with more attention than 3:1; the Transformer only if none
    dense = [(lay, sv.loc[lay, "mean"], sv.loc[lay, "std"])
             for lay in sv.index if attn_fraction(lay) > 0.25 and sv.loc[lay, "learned"]]
    dense = dense or [("transformer", m, s) for m, s in zip(tf["mean"], tf["std"])]
    if not dense:
        row["verdict"] = "no denser layout"
        return NO_DATA, row, ""
    verdict, sat, note = _saturation(sv, dense)
    best = max(dense, key=lambda t: t[1])
    r3 = sv.loc["3:1", "mean"]
    row["3:1 → denser"] = f"{fmt_delta(best[1] - r3, 'accuracy')} ({best[0]})"
    row["3:1 − Transformer"] = fmt_delta(r3 - tf["mean"].mean(), "accuracy") if len(tf) else "—"
    row["saturates at"] = sat
    row["verdict"] = verdict
    if len(tf):
        note += f"; {fmt_delta(r3 - tf['mean'].mean(), 'accuracy')} vs the Transformer at 3:1"
    return verdict, row, note


def claim_recall_saturates(ok: pd.DataFrame) -> Claim:
    title = "Recall saturates around 3:1"
    score = tables.recall_score(ok)
    if score is None:
        return Claim(title, NO_DATA, "No recall_acc rows with status ok.")
    s = score.summary()
    verdicts, notes, rows = [], [], []
    multi = len(tables.scales(s)) > 1
    for d in tables.scales(s):
        sd = tables.at_scale(s, d)
        tf = sd[(sd["variant"] == "attention") & sd["learned"]]  # an unlearned Transformer is no reference
        for v in sort_variants(sd["variant"]):
            if v == "attention":
                continue
            verdict, row, note = _saturation_row(sd, v, tf)
            rows.append({**({"d_model": width_text(d)} if multi else {}), **row})
            verdicts.append(verdict)
            if note:
                notes.append(f"{v} (d_model={width_text(d)})" if multi else v)
                notes[-1] += f" ({verdict}): {note}"
    verdict = combine(verdicts)
    summary = (f"Per variant, recall at 3:1 ({score.description}) is compared with the variant's denser layouts "
               f"(e.g. 1:1; the Transformer when there is none) and sparser ones. Two values tie when their "
               f"difference is within the seeds' spread (the sum of their stds) or {SATURATION_TOL:.2f}, whichever "
               "is larger. 'Around 3:1' means flat beyond 3:1 and first reached at 6:1 or 3:1; a gain above "
               f"{SATURATION_TOL:.2f} but within the spread, or a pure model that already ties with the top (the "
               "task saturates without attention), is **undecided**. Models that did not learn (†, at or below "
               "the plateau) are no evidence either way and are left out. ")
    summary += ("; ".join(notes) + ".") if notes else "No variant had both a 3:1 layout and a denser one."
    if verdict != NO_DATA and not spread_known(s.loc[s["variant"] != "attention", "std"]):
        verdict = at_most_partly(verdict)
        summary += f" Note: {NO_SPREAD}."
    details = ""
    if rows:
        df = pd.DataFrame(rows).fillna("")
        lays = sort_layouts([c for c in df.columns if c not in _SAT_TAIL + ["d_model", "variant"]])
        df = df[[c for c in ["d_model", "variant"] if c in df.columns] + lays
                + [c for c in _SAT_TAIL if c in df.columns]]
        details = md_table(df)
    return Claim(title, verdict, summary, details)


def all_claims(ok: pd.DataFrame) -> list[Claim]:
    return [claim_faster_and_smaller(ok), claim_recall_saturates(ok), claim_lm_stable(ok), claim_ranking(ok)]
