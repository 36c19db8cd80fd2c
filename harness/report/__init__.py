"""Build the Markdown report (with PNG + SVG figures) from a stored results table, never re-running.

    from harness.report import build_report
    build_report("results/quickstart")            # -> results/quickstart/report/report.md
    build_report("results/x/results.parquet", "out/")

The report's parts: the paper's tables re-made from our rows with the paper's own numbers beside
them, figures, uncertainty across seeds, claims tested against the data, failures and provenance.
Sections without data are skipped with the reason. This package never imports torch.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from harness.sweep.store import load_results

from .normalise import normalize, suite_name

__all__ = ["build_report", "build_report_from_frame", "load_results"]


def _safe_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-") or "results"


def default_report_dir(results: Path | str) -> Path:
    """Where a report lands by default: beside its table, `<results directory>/report` (for a
    .parquet file, `report/` in its folder). Results folders are not tracked (results/ is
    git-ignored), so building a report never changes a tracked file."""
    results = Path(results)
    return (results if results.is_dir() else results.parent) / "report"


def build_report(results_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Rebuild `<out_dir>/report.md` and `<out_dir>/figures/*.{png,svg}` from a results dir or parquet file.

    `out_dir` defaults to `default_report_dir(results_dir)`. Returns the report path. Raises
    FileNotFoundError when there is no results table at `results_dir`.
    """
    df = load_results(results_dir)
    default = default_report_dir(results_dir)
    return build_report_from_frame(df, out_dir or default, source=str(results_dir),
                                   _default_out=out_dir is None or Path(out_dir) == default)


def build_report_from_frame(df: pd.DataFrame, out_dir: Path | str | None = None, source: str = "<DataFrame>",
                            _default_out: bool | None = None) -> Path:
    """Same as `build_report`, from an in-memory results table (`out_dir` default:
    results/<suite name>/report)."""
    from . import markdown  # imports matplotlib; deferred so `import harness.report` stays light
    from .style import set_report_variants

    df = normalize(df if df is not None else pd.DataFrame())
    set_report_variants(df["variant"].dropna().unique())
    fallback = Path(source).stem if source and not source.startswith("<") else "results"
    suite = suite_name(df, fallback=fallback)
    default = out_dir is None if _default_out is None else _default_out
    out = Path(out_dir) if out_dir is not None else Path("results") / _safe_dirname(suite) / "report"
    out.mkdir(parents=True, exist_ok=True)
    regen = f"harness report {source}" + ("" if default else f" --out {out}")
    text, _ = markdown.render(df, out / "figures", source, regen)
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path
