"""Assemble report.md: sections of tables, figures, claims and provenance, skipping what has no data.

Each section is a function of one `ReportContext` (harness.report.sections): it reads the table
and adds its text and figures. The sections live with their kind: the paper's tables
(`paper_sections`), the figures and cost tables (`figure_sections`), placements (`placement`),
placement searches (`search`), sliding windows (`window`);
this module puts them in order (`render`) and adds the overview, which hybrid to use, claims,
failures and provenance."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .claims import all_claims
from .figure_sections import figures_section
from .figures import FigureRef
from .fmt import fmt_value, md_table
from .paper_sections import paper_tables
from .placement import placement_section
from .search import search_section
from .sections import ReportContext, skip
from .style import sort_layouts, sort_variants
from .tables import order
from .window import window_section


def no_data(ctx: ReportContext) -> None:
    """Instead of sections 1-3 when no row has status ok: why."""
    n = len(ctx.df)
    if n == 0:
        msg = "The results table is empty: there is nothing to tabulate, plot or test."
    else:
        counts = ctx.df["status"].value_counts().to_dict()
        msg = (f"No successful measurements: all {n} rows have a non-ok status "
               f"({', '.join(f'{k}: {v}' for k, v in counts.items())}). Nothing to tabulate, plot or test; "
               "see *Failures* below.")
    ctx.add("## No data\n\n" + msg + "\n\n" + skip(
        "sections 1–3 (paper tables, figures, claims) need rows with status `ok`."))


def header(ctx: ReportContext) -> None:
    suite = ", ".join(sorted({s for s in ctx.df["suite"].dropna()})) or "unknown"
    ctx.add(f"# Hybrid-attention report: {suite}\n\n"
            f"Built by `harness report` from `{ctx.source}` alone: nothing was re-run. Regenerate with "
            f"`{ctx.regen_cmd}`.\n\n"
            "Contents: [Data](#data) · [1. Paper tables](#1-the-papers-tables-re-made-from-our-rows) · "
            "[2. Figures](#2-figures) · [3. Claims](#3-claims) · [Failures](#failures) · "
            "[Provenance](#provenance)")


def overview(ctx: ReportContext) -> None:
    ok, df = ctx.ok, ctx.df
    seeds = sorted({int(s) for s in ok["seed"].dropna()})
    status = df["status"].value_counts()
    lines = [
        "## Data",
        "",
        f"- rows: {len(df)} ({', '.join(f'{k}: {v}' for k, v in status.items())})",
        f"- variants: {', '.join(sort_variants(ok['variant']))}",
        f"- layouts: {', '.join(sort_layouts(ok['layout']))}",
        f"- d_model: {', '.join(str(int(d)) for d in sorted(ok['d_model'].dropna().unique())) or '—'}",
        f"- seq_len: {', '.join(str(int(x)) for x in sorted(ok['seq_len'].dropna().unique())) or '—'}",
        f"- seeds: {', '.join(map(str, seeds)) or '—'}",
        "",
        ("**Uncertainty.** Values are means over seeds. Where more than one seed was run, a value reads "
         "`mean ± std (n=k)`: the sample standard deviation across k seeds (repeats, subtasks and lengths "
         "are first averaged within each seed). Figure error bars show the same std; for single-seed timings "
         "they show half the IQR of repeated timings (`spread`) where recorded."
         if len(seeds) > 1 else
         "**Uncertainty.** Only one seed was run, so no across-seed spread can be shown; timing error bars "
         "(where drawn) are half the IQR of repeated timings (`spread`)."),
        "",
    ]
    by_task = ok.groupby("task")["metric"].agg(lambda s: ", ".join(f"`{m}`" for m in sorted(set(s))))
    counts = ok.groupby("task").size()
    tab = pd.DataFrame({"task": by_task.index, "ok rows": counts.loc[by_task.index].values,
                        "metrics": by_task.values})
    lines.append(md_table(tab))
    ctx.add("\n".join(lines))


def which_hybrid_section(ctx: ReportContext) -> None:
    from .recommend import NEAR_FLOOR, which_hybrid

    ctx.add("## Which hybrid to use\n\nPer length with analytic cache rows: the most accurate model that "
            "learned, and the model with the smallest inference cache near it: tied with it within the "
            f"seeds' spread (the rule of the claims: means within their two stds summed), or within "
            f"{NEAR_FLOOR * 100:g} % of its score. Where other models tie with the most accurate, it is "
            "**undecided** between them, and they are named below the table. Accuracy is the report's score "
            "over every length it was measured at (the models are not re-measured at each length); the cache "
            "is the analytic `cache_bytes` at that length. For other budgets, floors or a decode-latency "
            "objective, ask `harness recommend " + ctx.source + " --seq-len L ...` (docs/report.md).")
    rows, notes = which_hybrid(ctx.df)
    ctx.add(md_table(rows) if not rows.empty else skip(
        "the table needs accuracy rows (recall, lm-eval or LM loss) of a model that learned, and "
        "analytic `cache_bytes` rows."))
    if not rows.empty and notes:
        ctx.add("\n\n".join(notes))


def claims_section(ctx: ReportContext) -> None:
    ctx.add("## 3. Claims\n\nEach stated claim is tested against the rows above. Verdicts: **holds** "
            "(everywhere tested), **partly** (somewhere), **fails** (nowhere), **undecided** (the difference "
            "the verdict rests on is within the seeds' spread: a tie), **no data**. Two means tie when they "
            "differ by no more than their two stds across seeds summed (their `mean ± std` overlap); with "
            "one seed no spread is known and a claim is at most **partly**.")
    ok = ctx.ok
    if ok["window"].notna().any():  # the paper's claims are about full attention
        ok = ok[ok["window"].isna()]
        ctx.add("The claims are tested on the models with full attention; the windowed ones (`w=…`) are in "
                "*Sliding windows* above.")
    for i, c in enumerate(all_claims(ok), 1):
        ctx.add(f"### 3.{i} \"{c.title}\" — **{c.verdict}**\n\n{c.summary}")
        if c.details:
            ctx.add(c.details)


def failures(ctx: ReportContext) -> None:
    ctx.add("## Failures")
    bad = ctx.df[ctx.df["status"] != "ok"]
    if bad.empty:
        ctx.add("No failed, OOM or diverged rows.")
        return
    counts = bad.groupby(["task", "status"]).size().reset_index(name="rows")
    ctx.add(md_table(counts))
    cells = bad.drop_duplicates(subset=["cell_id", "task", "status"]) if bad["cell_id"].notna().any() else bad
    show = order(cells)[["variant", "layout", "d_model", "seq_len", "task", "status", "error"]].head(30).copy()
    show["error"] = show["error"].fillna("").map(lambda e: (e[:117] + "…") if len(e) > 120 else e)
    for c in ("d_model", "seq_len"):
        show[c] = show[c].map(lambda x: "" if np.isnan(x) else str(int(x)))
    ctx.add(f"Failed cells ({len(cells)}{', first 30 shown' if len(cells) > 30 else ''}):\n\n" + md_table(show))


def provenance(ctx: ReportContext) -> None:
    df = ctx.df

    def uniq(col: str) -> str:
        vals = sorted({str(v) for v in df[col].dropna() if str(v)}) if col in df.columns else []
        return ", ".join(f"`{v}`" for v in vals) if vals else "—"

    times = df["started_at"].dropna() if "started_at" in df.columns else pd.Series(dtype=object)
    trange = f"{times.min().isoformat()} → {times.max().isoformat()}" if len(times) else "—"
    cell_time, elapsed = run_times(df)
    rows = [
        ("suite", uniq("suite")),
        ("results", f"`{ctx.source}`"),
        ("devices", uniq("device")),
        ("backends", uniq("backend")),
        ("dtypes", uniq("dtype")),
        ("torch", uniq("torch_version")),
        ("harness", uniq("harness_version")),
        ("git sha", uniq("git_sha")),
        ("runs started", trange),
        ("cell time (sum over cells)", fmt_value(cell_time, "s")),
        ("elapsed (first start to last end)", fmt_value(elapsed, "s")),
        ("rows", str(len(df))),
        ("regenerate", f"`{ctx.regen_cmd}`"),
    ]
    ctx.add("## Provenance\n\n" + md_table(pd.DataFrame(rows, columns=["field", "value"])))


def run_times(df: pd.DataFrame) -> tuple[float, float]:
    """(the cells' wall time summed, one per cell; elapsed from the first cell's start to the
    last cell's end). Every row of a cell carries the cell's wall_s, so summing rows would count
    a cell once per metric (710 s for a 101 s run)."""
    if "wall_s" not in df.columns or df["wall_s"].isna().all():
        return float("nan"), float("nan")
    cells = df.dropna(subset=["wall_s"]).drop_duplicates("cell_id")
    total = float(cells["wall_s"].sum())
    start = pd.to_datetime(cells["started_at"], utc=True, errors="coerce") if "started_at" in cells else None
    if start is None or start.isna().all():
        return total, float("nan")
    end = start + pd.to_timedelta(cells["wall_s"], unit="s")
    return total, float((end.max() - start.min()).total_seconds())


def render(df: pd.DataFrame, fig_dir: Path, source: str, regen_cmd: str) -> tuple[str, list[FigureRef]]:
    """report.md's text and the figures it shows, from a normalised table (each figure is written
    to `fig_dir` as it is drawn)."""
    ctx = ReportContext.of(df, fig_dir, source, regen_cmd)
    header(ctx)
    if ctx.ok.empty:
        no_data(ctx)
    else:
        for section in (overview, paper_tables, figures_section, placement_section, search_section, window_section,
                        which_hybrid_section, claims_section):
            section(ctx)
    failures(ctx)
    provenance(ctx)
    return "\n".join(ctx.parts), ctx.figures
