"""Report figures (matplotlib, Agg backend). Each figure is written as PNG and SVG.

Every function takes summaries computed by `tables.py` (so figures and tables agree), draws one
colour per variant (style.variant_color) and returns the `FigureRef`s it wrote.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from . import tables  # noqa: E402
from .style import (  # noqa: E402
    axis_label,
    layout_marker,
    metric_label,
    sort_layouts,
    sort_variants,
    variant_color,
    variant_label,
)

plt.rcParams.update({
    "svg.hashsalt": "hybrid-attention-harness",  # stable SVG ids, so re-runs diff cleanly
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
})
DPI = 110
MAX_PANELS = 8


@dataclass
class FigureRef:
    stem: str  # file name without extension, relative to the figures dir
    title: str
    caption: str

    def files(self) -> list[str]:
        return [f"{self.stem}.png", f"{self.stem}.svg"]


def slug(*parts) -> str:
    s = "_".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()


def save(fig, fig_dir: Path, stem: str, title: str, caption: str) -> FigureRef:
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig.draw_without_rendering()  # lay out once; both formats reuse the same tight box
    box = fig.get_tightbbox().padded(0.1)
    fig.savefig(fig_dir / f"{stem}.png", dpi=DPI, bbox_inches=box, metadata={"Software": None})
    fig.savefig(fig_dir / f"{stem}.svg", bbox_inches=box, metadata={"Date": None})
    plt.close(fig)
    return FigureRef(stem, title, caption)


# --------------------------------------------------------------------------- helpers

def _nice_scale(metric: str, unit: str, values) -> tuple[float, str]:
    """(divisor, unit label) so that axes read in MiB / ms rather than raw bytes / seconds."""
    u = (unit or "").lower()
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v) and v > 0], float)
    med = float(np.median(vals)) if len(vals) else 1.0
    if u in ("bytes", "b", "byte"):
        for div, name in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB"), (1024, "KiB")):
            if med >= div:
                return div, name
        return 1.0, "bytes"
    if u in ("s", "seconds"):
        if med < 1e-3:
            return 1e-6, "µs"
        if med < 1:
            return 1e-3, "ms"
        return 1.0, "s"
    return 1.0, unit


def _spans_decades(values) -> bool:
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v) and v > 0], float)
    return len(vals) > 1 and vals.max() / vals.min() >= 10


def _log_y(ax, values) -> None:
    """Log y axis; plain 1-2-5 tick labels when the numbers are human-sized (else 10^k labels)."""
    ax.set_yscale("log")
    vals = np.asarray([v for v in values if v is not None and np.isfinite(v) and v > 0], float)
    if len(vals) and vals.min() >= 1e-2 and vals.max() < 1e5:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _grid(n: int, w: float = 3.6, h: float = 2.9, sharey: bool = False):
    if n == 1:
        w, h = max(w, 5.2), max(h, 3.4)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False, sharey=sharey)
    flat = axes.ravel().tolist()
    for ax in flat[n:]:
        ax.set_visible(False)
    fig.subplots_adjust(wspace=0.12 if sharey else 0.32, hspace=0.55)
    return fig, flat[:n]


def _finish(fig, axes, title: str, handles=None, labels=None) -> None:
    """Legend in one place above the panels, then the title above the legend (no overlaps)."""
    if handles is None:
        seen = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        labels, handles = list(seen.keys()), list(seen.values())
    height = fig.get_figheight()
    top = max(a.get_position().y1 for a in axes)
    y = top + 0.32 / height  # clear of the panel titles
    if handles:
        ncol = min(len(handles), 7)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, bbox_to_anchor=(0.5, y), frameon=False)
        y += (0.24 * math.ceil(len(handles) / ncol) + 0.08) / height
    fig.suptitle(title, y=y, va="bottom", fontsize=11)


def _errs(sub: pd.DataFrame, div: float):
    """Error bars: std across seeds where n > 1, else the IQR of repeats if the table has it."""
    err = sub["std"].where(sub["n"] > 1)
    if "iqr" in sub.columns:
        err = err.fillna(sub["iqr"] / 2)
    err = err / div
    return None if err.isna().all() else err.fillna(0).values


def _pick(values, k: int) -> list:
    values = sorted(values)
    if len(values) <= k:
        return values
    idx = np.unique(np.linspace(0, len(values) - 1, k).round().astype(int))
    return [values[i] for i in idx]


# --------------------------------------------------------------------------- ratio plots

def score_vs_ratio(summary: pd.DataFrame, panel_col: str | None, ylabel: str, title: str,
                   fig_dir: Path, stem: str, caption: str, logy: bool = False,
                   reference: dict | None = None) -> FigureRef | None:
    """x = layouts from sparse to dense (categorical), one line per variant, Transformer at the right.

    `summary` has d_model?, variant, layout, mean, std, n and optionally `panel_col` (e.g. seq_len).
    `reference` (accuracy scores): {panel value (None without panels): {"chance": c, "plateau": p}},
    drawn as grey reference lines on a 0..1 axis, so a score near chance never fills the plot.
    """
    if summary.empty:
        return None
    panels = [None] if panel_col is None else _pick(summary[panel_col].dropna().unique().tolist(), MAX_PANELS)
    layouts = sort_layouts(summary["layout"])
    xpos = {l: i for i, l in enumerate(layouts)}
    fig, axes = _grid(len(panels), sharey=True)
    for ax, p in zip(axes, panels):
        sub = summary if p is None else summary[summary[panel_col] == p]
        for v in sort_variants(sub["variant"]):
            s = sub[sub["variant"] == v].copy()
            s = s.assign(_x=s["layout"].map(xpos)).sort_values("_x")
            if v == "attention":
                for y in s.loc[tables.full_transformer(s), "mean"]:  # the reference: full attention
                    ax.axhline(y, color=variant_color(v), ls="--", lw=1, alpha=0.7)
                ax.errorbar(s["_x"], s["mean"], yerr=_errs(s, 1.0), fmt="*", ms=10, color=variant_color(v),
                            label=variant_label(v), capsize=3)
            else:
                ax.errorbar(s["_x"], s["mean"], yerr=_errs(s, 1.0), fmt="-o", ms=4, lw=1.5,
                            color=variant_color(v), label=variant_label(v), capsize=3)
        ax.set_xticks(range(len(layouts)))
        ax.set_xticklabels(layouts, rotation=30)
        ax.set_xlabel("layout (linear:full, sparse → dense)")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        if reference is not None:
            lv = reference.get(p, {})
            for name, ls in (("plateau", "-."), ("chance", ":")):
                if lv.get(name) is not None and np.isfinite(lv[name]):
                    ax.axhline(lv[name], color="0.45", ls=ls, lw=1.2, zorder=0)
                    ax.annotate(f"{name} {lv[name]:.3g}", (len(layouts) - 0.5, lv[name]), color="0.35",
                                fontsize=7, ha="right", va="bottom")
            ax.set_ylim(0, 1.03)
        if p is not None:
            ax.set_title(f"{panel_col} = {int(p) if float(p).is_integer() else p}")
    _finish(fig, axes, title)
    return save(fig, fig_dir, stem, title, caption)


def recall_vs_state(points: pd.DataFrame, fig_dir: Path, stem: str, title: str, caption: str,
                    reference: dict | None = None) -> FigureRef | None:
    """Zoology's headline figure: one panel per recall length, x = bytes a model carries per
    sequence (log; a linear model's recurrent state, the Transformer's KV cache at that length),
    y = recall; one line per variant through its widths / head counts, the Transformer as a black
    dashed reference. `points`: rows of tables.state_size_lines."""
    if points.empty:
        return None
    panels = _pick(points["length"].dropna().unique().tolist(), MAX_PANELS)
    fig, axes = _grid(len(panels), sharey=True)
    for ax, L in zip(axes, panels):
        sub = points[points["length"] == L]
        for v in sort_variants(sub["variant"]):
            s = sub[sub["variant"] == v].sort_values("bytes")
            tf = v == "attention"
            ax.errorbar(s["bytes"], s["mean"], yerr=_errs(s, 1.0), fmt="--*" if tf else "-o", ms=9 if tf else 4,
                        lw=1.2 if tf else 1.5, color=variant_color(v), capsize=3,
                        label=variant_label(v) + (" (KV cache)" if tf else ""))
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(LogLocator(base=4))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _bytes_tick(x)))
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_xlabel("state bytes per sequence (log)")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("recall accuracy [fraction correct]")
        lv = (reference or {}).get(L, {})
        for name, ls in (("plateau", "-."), ("chance", ":")):
            if lv.get(name) is not None and np.isfinite(lv[name]):
                ax.axhline(lv[name], color="0.45", ls=ls, lw=1.2, zorder=0)
        ax.set_ylim(0, 1.03)
        ax.set_title(f"recall length = {int(L)}")
    _finish(fig, axes, title)
    return save(fig, fig_dir, stem, title, caption)


def _bytes_tick(x: float) -> str:
    for div, name in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB"), (1024, "KiB")):
        if x >= div:
            return f"{x / div:g} {name}"
    return f"{x:g} B"


# --------------------------------------------------------------------------- length plots

def lines_by_layout(summary: pd.DataFrame, xcol: str, metric: str, unit: str, title: str,
                    fig_dir: Path, stem: str, caption: str, xlabel: str | None = None) -> FigureRef | None:
    """Small multiples, one panel per layout, one line per variant vs `xcol` (log-log where values span
    decades); the Transformer is drawn as a black dashed reference in every panel."""
    if summary.empty:
        return None
    div, ulabel = _nice_scale(metric, unit, summary["mean"])
    base = tables.full_transformer(summary)  # a sliding-window Transformer gets its own panel
    tf, others = summary[base], summary[~base]
    layouts = sort_layouts(others["layout"]) or ["transformer"]
    layouts = layouts[:MAX_PANELS]
    logy = _spans_decades(summary["mean"])
    logx = _spans_decades(summary[xcol])
    fig, axes = _grid(len(layouts), sharey=True)
    for ax, lay in zip(axes, layouts):
        sub = others[others["layout"] == lay]
        for v in sort_variants(sub["variant"]):
            s = sub[sub["variant"] == v].sort_values(xcol)
            ax.errorbar(s[xcol], s["mean"] / div, yerr=_errs(s, div), fmt="-" + layout_marker(lay), ms=4,
                        lw=1.5, color=variant_color(v), label=variant_label(v), capsize=2)
        if not tf.empty:
            s = tf.sort_values(xcol)
            ax.errorbar(s[xcol], s["mean"] / div, yerr=_errs(s, div), fmt="--*", ms=6, lw=1.2,
                        color=variant_color("attention"), label=variant_label("attention"), capsize=2)
        if logx:
            ax.set_xscale("log", base=2)
        if logy:
            _log_y(ax, summary["mean"] / div)
        ax.set_title(f"layout {lay}" if lay != "transformer" else "Transformer")
        ax.set_xlabel(xlabel or f"{xcol} [tokens]")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(f"{metric_label(metric)} [{ulabel}]" if ulabel else metric_label(metric))
    _finish(fig, axes, title)
    return save(fig, fig_dir, stem, title, caption)


def flops_per_layer_vs_length(summary: pd.DataFrame, fig_dir: Path, stem: str, caption: str) -> FigureRef | None:
    """Per-layer mixer FLOPs vs length, one line per mixer (the paper's Fig. 4), log-log."""
    if summary.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for v in sort_variants(summary["variant"]):
        s = summary[summary["variant"] == v].groupby("seq_len")["mean"].mean().reset_index()
        ax.plot(s["seq_len"], s["mean"], marker="o", ms=4, lw=1.8 if v != "attention" else 2.2,
                ls="-" if v != "attention" else "--", color=variant_color(v), label=variant_label(v))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L [tokens]")
    ax.set_ylabel(axis_label("mixer_flops_per_token_per_layer", "FLOP"))
    ax.set_title("Token-mixer FLOPs per token per layer vs length")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return save(fig, fig_dir, stem, "Token-mixer FLOPs per token per layer vs length", caption)


def cache_vs_ratio(summary: pd.DataFrame, metric: str, fig_dir: Path, stem: str, caption: str) -> FigureRef | None:
    """Cache bytes vs layout, one line per variant, one panel per length (log y)."""
    if summary.empty:
        return None
    lens = _pick(summary["seq_len"].dropna().unique().tolist(), 3) or [None]
    div, ulabel = _nice_scale(metric, "bytes", summary["mean"])
    layouts = sort_layouts(summary["layout"])
    xpos = {l: i for i, l in enumerate(layouts)}
    fig, axes = _grid(len(lens))
    for ax, L in zip(axes, lens):
        sub = summary if L is None else summary[summary["seq_len"] == L]
        for v in sort_variants(sub["variant"]):
            s = sub[sub["variant"] == v]
            s = s.assign(_x=s["layout"].map(xpos)).sort_values("_x")
            ax.plot(s["_x"], s["mean"] / div, "-*" if v == "attention" else "-o", ms=8 if v == "attention" else 4,
                    color=variant_color(v), label=variant_label(v))
        ax.set_xticks(range(len(layouts)))
        ax.set_xticklabels(layouts, rotation=30)
        ax.set_xlabel("layout (linear:full, sparse → dense)")
        ax.set_ylabel(f"{metric_label(metric)} [{ulabel}]")
        if _spans_decades(sub["mean"]):
            _log_y(ax, sub["mean"] / div)
        if L is not None:
            ax.set_title(f"seq_len = {int(L)}")
    label = metric_label(metric)
    title = f"{label[:1].upper()}{label[1:]} vs ratio"
    _finish(fig, axes, title)
    return save(fig, fig_dir, stem, title, caption)


def pareto(points_by_len: dict[int, pd.DataFrame], score: tables.Score, fig_dir: Path, stem: str,
           caption: str) -> FigureRef | None:
    """Performance vs 1/FLOPs (log x), front drawn as a line, one panel per length (the paper's Fig. 3)."""
    items = [(L, p) for L, p in points_by_len.items() if not p.empty]
    if not items:
        return None
    fig, axes = _grid(len(items), w=4.8, h=3.8, sharey=True)
    for ax, (L, pts) in zip(axes, items):
        for r in pts.itertuples(index=False):
            ax.scatter(r.inv_flops, r.mean, s=46 if r.on_front else 26, marker=layout_marker(r.layout),
                       color=variant_color(r.variant), edgecolors="k" if r.on_front else "none",
                       linewidths=0.8, label=variant_label(r.variant), zorder=3)
        front = pts[pts["on_front"]].sort_values("inv_flops")
        ax.plot(front["inv_flops"], front["mean"], "-", color="0.4", lw=1, zorder=2, label="Pareto front")
        for r in front.itertuples(index=False):
            ax.annotate(f"{variant_label(r.variant)} {r.layout}" if r.variant != "attention" else
                        "Transformer" + r.layout[len("transformer"):],  # "Transformer w=64" for a window
                        (r.inv_flops, r.mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("1 / token-mixer FLOPs per token [1/FLOP] (cheaper →)")
        arrow = "↑ better" if score.higher_is_better else "↓ better"
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(f"{score.metric} [{score.unit}] ({arrow})")
        ax.set_title(f"L = {L}")
    title = f"Performance–efficiency Pareto front ({score.metric})"
    dm = pd.concat([p for _, p in items])["d_model"].dropna().unique()
    if len(dm) == 1:
        title += f", d_model={int(dm[0])}"
    allpts = pd.concat([p for _, p in items])
    handles = [Line2D([], [], ls="", marker="o", ms=7, color=variant_color(v))
               for v in sort_variants(allpts["variant"])]
    labels = [variant_label(v) for v in sort_variants(allpts["variant"])]
    for lay in sort_layouts(allpts["layout"]):
        handles.append(Line2D([], [], ls="", marker=layout_marker(lay), ms=7, color="0.5"))
        labels.append(f"layout {lay}")
    handles.append(Line2D([], [], color="0.4", lw=1))
    labels.append("Pareto front")
    _finish(fig, axes, title, handles, labels)
    return save(fig, fig_dir, stem, title, caption)
