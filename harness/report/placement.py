"""The report's placement section: where a hybrid's attention layers sit (harness.model.layout
placements), as a placement x ratio table and figure for recall, LM quality and cache bytes.

The section appears only when the table holds more than one placement of some ratio. Elsewhere
in the report a placed layout reads "3:1 bottom" (harness.report.normalise.normalize), so no table
averages different placements together; here the ratio and the placement are separate columns
(`ratio`, `placement`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.model.layout import placement_key

from . import figures, tables
from .fmt import fmt_mean_std, md_table
from .normalise import window_suffix
from .sections import ReportContext, _d, skip
from .style import sort_layouts, sort_variants, variant_color, variant_label

KEYS = ["d_model", "variant", "ratio", "placement"]


def placed_ratios(ok: pd.DataFrame) -> list[str]:
    """The ratios measured at more than one placement."""
    if ok.empty or "ratio" not in ok.columns:
        return []
    counts = ok.groupby("ratio")["placement"].nunique()
    return sort_layouts(counts[counts > 1].index)


def placement_summary(ok: pd.DataFrame, metric: str, ratios: list[str]) -> pd.DataFrame:
    """mean / std / n across seeds of `metric` per (d_model, variant, ratio, placement), for the
    hybrid rows of `ratios` (everything else averaged within a seed: subtasks, lengths); a windowed
    model's ratio reads "3:1 w=64", so windows are never averaged together."""
    rows = tables.metric_rows(ok, metric)
    rows = rows[rows["ratio"].isin(ratios)]
    rows = rows.assign(ratio=rows["ratio"] + rows["window"].map(window_suffix).astype(str))  # "3:1 w=64": another model
    return tables.across_seeds(tables.per_seed(rows, KEYS), KEYS)


def placement_table(summary: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Rows: variant x placement (in PLACEMENTS order); columns: ratios; cells `mean ± std (n)`."""
    if summary.empty:
        return pd.DataFrame()
    s = summary.assign(text=[fmt_mean_std(m, sd, n, unit) for m, sd, n in
                             zip(summary["mean"], summary["std"], summary["n"])])
    wide = s.pivot_table(index=["variant", "placement"], columns="ratio", values="text", aggfunc="first")
    places = sorted(set(s["placement"]), key=placement_key)
    order = [(v, p) for v in sort_variants(s["variant"]) for p in places if (v, p) in wide.index]
    wide = wide.reindex(index=order, columns=sort_layouts(wide.columns)).fillna("—").reset_index()
    wide.columns.name = None
    return wide


def score_vs_placement(summary: pd.DataFrame, ylabel: str, title: str, fig_dir: Path, stem: str,
                       caption: str) -> figures.FigureRef | None:
    """x = placements, one panel per ratio, one line per variant (error bars: std across seeds)."""
    if summary.empty:
        return None
    ratios = sort_layouts(summary["ratio"])
    placements = sorted(set(summary["placement"]), key=placement_key)
    fig, axes = figures._grid(len(ratios), sharey=True)
    for ax, r in zip(axes, ratios):
        sub = summary[summary["ratio"] == r]
        for v in sort_variants(sub["variant"]):
            s = sub[sub["variant"] == v].assign(_x=lambda d: d["placement"].map(placements.index)).sort_values("_x")
            ax.errorbar(s["_x"], s["mean"], yerr=figures._errs(s, 1.0), fmt="-o", ms=4, lw=1.5, capsize=3,
                        color=variant_color(v), label=variant_label(v))
        ax.set_xticks(range(len(placements)))
        ax.set_xticklabels(placements, rotation=30)
        ax.set_xlabel("placement of the attention layers")
        ax.set_title(f"{r}")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)
    figures._finish(fig, axes, title)
    return figures.save(fig, fig_dir, stem, title, caption)


def placement_section(ctx: ReportContext) -> None:
    ratios = placed_ratios(ctx.ok)
    if not ratios:
        return
    ctx.add("## Placement\n\nWhere the attention layers of a hybrid sit, at a fixed ratio (`placement`: "
            "interleave = the paper's r linear layers then one attention layer, repeated; bottom / top = all "
            "attention layers first / last; middle = centred; ends = split between the first and the last "
            "layers; attn:i = explicit attention layer indices). Rows: variant and placement; columns: ratio; "
            "`mean ± std (n seeds)`. The cache does not depend on placement (the same layers, reordered): its "
            "table is a check.")
    rec = tables.recall_score(ctx.ok)
    lm = tables.lm_score(ctx.ok)  # LM rows only: a recall task's training loss is not LM quality
    done = False
    for metric, label, unit, note in (
            ("recall_acc", "recall accuracy [fraction correct]", "",
             "mean recall_acc over subtasks and lengths" if rec is not None else ""),
            ("train_steps", "training steps", "",
             "training steps taken: the early stop once a held-out probe is solved, else the whole budget "
             "(a cell that never stopped did not solve it)"),
            (lm.metric if lm is not None else "", lm.metric if lm is not None else "", lm.unit if lm else "",
             lm.description if lm is not None else ""),
            ("cache_bytes", "cache bytes", "bytes", "analytic inference cache (state + KV)")):
        if not metric:
            continue
        summary = placement_summary(ctx.ok, metric, ratios)
        if summary.empty:
            continue
        done = True
        for d in tables.scales(summary):
            sub = tables.at_scale(summary, d)
            multi = len(tables.scales(summary)) > 1
            ctx.add(f"### {metric} by placement{f' ({_d(d)})' if multi else ''}\n\n{note}.\n\n"
                    + md_table(placement_table(sub, unit)))
            if metric not in ("cache_bytes", "train_steps"):
                ctx.figure(score_vs_placement(
                    sub, label, f"{metric} by placement{f' ({_d(d)})' if multi else ''}", ctx.fig_dir,
                    figures.slug("placement", metric, _d(d) if multi else ""),
                    f"{note}; one panel per ratio, one line per variant, error bars: std across seeds."))
    if not done:
        ctx.add(skip("no recall, LM or cache rows at the placed ratios."))


__all__ = ["placement_section", "placed_ratios", "placement_summary", "placement_table", "score_vs_placement"]
