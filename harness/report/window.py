"""The report's sliding-window section: models whose attention layers see only their last W keys
(`window`, ModelConfig.window), next to the same models with full attention.

Elsewhere in the report a windowed model's layout reads "3:1 w=64" or "transformer w=64"
(harness.report.normalise.normalize), so no table averages windows together. Here the window is a
column of its own, beside the model's layout without it (`base`): the inference cache against the
context length (an SWA layer's KV cache stops growing at W), and recall at each window, the
full-attention model as the reference. The section appears only when the table has windowed rows.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import figures, tables
from .fmt import fmt_mean_std, fmt_value, md_table
from .normalise import window_label
from .sections import ReportContext, _d, skip
from .style import sort_layouts, sort_variants, variant_color, variant_label

KEYS = ["d_model", "variant", "base", "window"]
#: a windowed model's marker in the cache figure, by its window's rank (full attention: "o")
WINDOW_MARKERS = ["s", "^", "D", "v", "P", "X"]


def with_base(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with `base`, the layout without its window ("3:1 bottom w=64" -> "3:1 bottom"), and
    `window` as a number (NaN = full attention)."""
    w = rows["window"].astype(float) if "window" in rows.columns else pd.Series(np.nan, index=rows.index)
    base = rows["layout"].astype(str).str.replace(r" w=\d+$", "", regex=True)
    return rows.assign(base=base, window=w)


def has_windows(ok: pd.DataFrame) -> bool:
    return "window" in ok.columns and bool(ok["window"].notna().any())


def _twins(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the windowed models and of their full-attention twins (same d_model, variant
    and base layout)."""
    rows = with_base(rows)
    pairs = rows.loc[rows["window"].notna(), ["d_model", "variant", "base"]].drop_duplicates()
    return rows.merge(pairs, on=["d_model", "variant", "base"], how="inner")


def _window_order(windows) -> list[float]:
    """Windows from the smallest to full attention (NaN, last)."""
    vals = {float(w) for w in windows}
    finite = sorted(w for w in vals if not math.isnan(w))
    return finite + ([math.nan] if any(math.isnan(w) for w in vals) else [])


def _model_name(variant: str, base: str, window) -> str:
    name = "Transformer" if variant == "attention" else f"{variant_label(variant)} {base}"
    return name + ("" if pd.isna(window) else f" w={int(window)}")


def cache_vs_length(ok: pd.DataFrame) -> pd.DataFrame:
    """Analytic `cache_bytes` (else `kv_cache_bytes`) per sequence at each length (smallest
    batch; value / batch) of every windowed model and its full-attention twin: columns d_model,
    variant, base, window, seq_len, bytes, model (a label such as "Transformer w=64")."""
    cols = KEYS + ["seq_len", "bytes", "model"]
    metric = next((m for m in ("cache_bytes", "kv_cache_bytes") if tables.has_metric(ok, m)), None)
    if metric is None:
        return pd.DataFrame(columns=cols)
    rows = tables.at_smallest(tables.metric_rows(ok, metric), "batch")
    rows = _twins(rows.assign(value=rows["value"] / rows["batch"].fillna(1.0)))
    if rows.empty:
        return pd.DataFrame(columns=cols)
    out = rows.groupby(KEYS + ["seq_len"], dropna=False)["value"].mean().rename("bytes").reset_index()
    out["model"] = [_model_name(v, b, w) for v, b, w in zip(out["variant"], out["base"], out["window"])]
    return out[cols]


def cache_table(points: pd.DataFrame) -> pd.DataFrame:
    """One row per model (full attention after its windows), one column per length."""
    models = points.drop_duplicates("model")
    vs, bs = sort_variants(models["variant"]), sort_layouts(models["base"])
    models = models.assign(_k=[(vs.index(v), bs.index(b), math.inf if pd.isna(w) else w)
                               for v, b, w in zip(models["variant"], models["base"], models["window"])])
    models = models.sort_values("_k")
    wide = points.pivot_table(index="model", columns="seq_len", values="bytes", aggfunc="first")
    out = pd.DataFrame({"model": models["model"].values, "window": models["window"].map(window_label).values})
    for L in sorted(wide.columns):
        out[f"L={int(L)}"] = [fmt_value(wide.at[m, L], "bytes") if m in wide.index else "—" for m in out["model"]]
    return out


def recall_vs_window(ok: pd.DataFrame) -> pd.DataFrame:
    """mean / std / n across seeds of `recall_acc` (mean over subtasks within a seed) per
    d_model, variant, base layout, window and recall length (`seq_len`), for every windowed
    model and its full-attention twin."""
    rows = _twins(tables.metric_rows(ok, "recall_acc"))
    keys = KEYS + ["seq_len"]
    return tables.across_seeds(tables.per_seed(rows, keys), keys)


def recall_window_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows: variant and base layout (and length where several); columns: windows, full last."""
    windows = _window_order(summary["window"])
    multi_len = summary["seq_len"].nunique() > 1
    out = []
    for (v, b, L), g in summary.groupby(["variant", "base", "seq_len"], dropna=False, sort=False):
        row = {"variant": v, "layout": b, **({"seq_len": int(L)} if multi_len else {})}
        for w in windows:
            x = g[g["window"].isna()] if math.isnan(w) else g[g["window"] == w]
            row[window_label(w)] = fmt_mean_std(*x[["mean", "std", "n"]].iloc[0], "accuracy") if len(x) else "—"
        out.append(row)
    df = pd.DataFrame(out)
    vs, bs = sort_variants(df["variant"]), sort_layouts(df["layout"])
    df = df.assign(_k=[(vs.index(v), bs.index(b)) for v, b in zip(df["variant"], df["layout"])])
    return df.sort_values(["_k"] + (["seq_len"] if multi_len else [])).drop(columns="_k").reset_index(drop=True)


def cache_figure(points: pd.DataFrame, fig_dir: Path, stem: str, caption: str) -> figures.FigureRef | None:
    """x = context length (log), y = cache bytes per sequence (log); one line per model, the
    variant's colour, windowed models dashed with their window marked."""
    fig, axes = figures._grid(1)
    ax = axes[0]
    windows = sorted({float(w) for w in points["window"].dropna()})
    for model, s in points.groupby("model", sort=False):
        s = s.sort_values("seq_len")
        w = s["window"].iloc[0]
        fmt = "-o" if pd.isna(w) else "--" + WINDOW_MARKERS[windows.index(float(w)) % len(WINDOW_MARKERS)]
        ax.plot(s["seq_len"], s["bytes"], fmt, ms=4, lw=1.5, color=variant_color(s["variant"].iloc[0]), label=model)
    for w in windows:
        ax.axvline(w, color="0.6", ls=":", lw=1, zorder=0)
    ax.set_xscale("log", base=2)
    if figures._spans_decades(points["bytes"]):
        ax.set_yscale("log")
    ax.set_xlabel("context length [tokens] (dotted: the windows)")
    ax.set_ylabel("inference cache per sequence [bytes]")
    title = "Inference cache vs context length, sliding windows"
    figures._finish(fig, axes, title)
    return figures.save(fig, fig_dir, stem, title, caption)


def recall_figure(summary: pd.DataFrame, fig_dir: Path, stem: str, caption: str,
                  reference: dict | None) -> figures.FigureRef | None:
    """x = window (smallest first, full attention at the right), y = recall; one panel per recall
    length, one line per (variant, base layout)."""
    windows = _window_order(summary["window"])
    xpos = {window_label(w): i for i, w in enumerate(windows)}
    lengths = sorted(summary["seq_len"].dropna().unique())[:figures.MAX_PANELS] or [np.nan]
    fig, axes = figures._grid(len(lengths), sharey=True)
    for ax, L in zip(axes, lengths):
        sub = summary if pd.isna(L) else summary[summary["seq_len"] == L]
        for (v, b), s in sub.groupby(["variant", "base"], sort=False):
            s = s.assign(_x=s["window"].map(lambda w: xpos[window_label(w)])).sort_values("_x")
            ax.errorbar(s["_x"], s["mean"], yerr=figures._errs(s, 1.0), fmt="--*" if v == "attention" else "-o",
                        ms=8 if v == "attention" else 4, lw=1.5, capsize=3, color=variant_color(v),
                        label=_model_name(v, b, np.nan))
        for name, ls in (("plateau", "-."), ("chance", ":")):
            lv = (reference or {}).get(L, {}).get(name)
            if lv is not None and np.isfinite(lv):
                ax.axhline(lv, color="0.45", ls=ls, lw=1.2, zorder=0)
        ax.set_xticks(range(len(xpos)))
        ax.set_xticklabels(list(xpos), rotation=30)
        ax.set_xlabel("attention window")
        ax.set_ylim(0, 1.03)
        ax.set_title("" if pd.isna(L) else f"seq_len = {int(L)}")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("recall accuracy [fraction correct]")
    title = "Recall vs window"
    figures._finish(fig, axes, title)
    return figures.save(fig, fig_dir, stem, title, caption)


def _per_scale(ctx: ReportContext, data: pd.DataFrame, intro: str, table, draw, stem: str) -> None:
    """Per d_model of `data`: `intro` and `table(rows)` as Markdown, then the figure `draw(rows, stem)`."""
    scales = tables.scales(data)
    for d in scales:
        sub, multi = tables.at_scale(data, d), len(scales) > 1
        ctx.add((f"{_d(d)}. " if multi else "") + intro + "\n\n" + md_table(table(sub)))
        ctx.figure(draw(sub, figures.slug(stem, _d(d) if multi else "")))


def _cache_part(ctx: ReportContext) -> None:
    points = cache_vs_length(ctx.ok)
    ctx.add("### Inference cache vs context length")
    if points.empty or points["seq_len"].nunique() < 2:
        ctx.add(skip("needs analytic `cache_bytes` rows of the windowed models at two lengths or more."))
        return
    _per_scale(ctx, points, "Analytic inference cache (recurrent state + KV) per sequence; a sliding-window "
               "attention layer keeps the last min(L, W) tokens, so a windowed model's cache stops growing at its "
               "window W, while the full-attention twin's grows with L.", cache_table,
               lambda sub, stem: cache_figure(sub, ctx.fig_dir, stem, "Analytic cache per sequence against the "
                                              "context length (log-log), one line per model; windowed models "
                                              "dashed, the windows dotted."), "cache_vs_length_window")


def _recall_part(ctx: ReportContext) -> None:
    summary = recall_vs_window(ctx.ok)
    ctx.add("### Recall vs window")
    if summary.empty or summary["window"].notna().sum() == 0:
        ctx.add(skip("no `recall_acc` rows of a windowed model."))
        return
    ref = tables.recall_reference(ctx.ok, "seq_len")
    _per_scale(ctx, summary, "Mean recall_acc over subtasks, `mean ± std (n seeds)`, per model at each window; "
               "the `full` column is the same model with full attention, the reference. A layer's query sees only its "
               "last W keys: a key farther back (up to `seq_len`) reaches it only through the layers below (n "
               "windowed layers see at most n·(W − 1) tokens back) or the linear layers' state.", recall_window_table,
               lambda sub, stem: recall_figure(sub, ctx.fig_dir, stem, "x = window, full attention at the right; "
                                               "one line per model (the Transformer dashed); error bars: std "
                                               "across seeds; grey: plateau (dash-dot) and chance (dotted).", ref),
               "recall_vs_window")


def window_section(ctx: ReportContext) -> None:
    """Sliding windows: cache vs length and recall vs window (only for a table with windows)."""
    if not has_windows(ctx.ok):
        return
    ctx.add("## Sliding windows\n\nModels whose attention layers attend to their last W keys only "
            "(`window`; docs/suites.md), beside the same models with full attention. Elsewhere in the report "
            "their layouts read `3:1 w=64`, `transformer w=64`.")
    _cache_part(ctx)
    _recall_part(ctx)


__all__ = ["window_section", "cache_vs_length", "cache_table", "recall_vs_window", "recall_window_table",
           "has_windows", "with_base"]
