"""What every part of the report shares: the section helpers and `ReportContext`, which every
section function reads and writes (`paper_sections`, `figure_sections`, `placement`;
`markdown.render` calls them in order)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import FigureRef
from .normalise import ok_rows

PAPER_NOTE = ("Columns and rows labelled *paper (…)* are the paper's published numbers "
              "(`harness/report/paper_numbers.json`, copied from arXiv 2507.06457), **not ours**. They come "
              "from 340M/1.3B models trained on 20B/100B tokens and evaluated on lm-eval / RULER; our models, "
              "data and tasks are usually far smaller, so compare trends across ratios, not absolute levels.")


def _measured(record: dict, key: str) -> float | None:
    """record[key] when it holds a measured number, else None."""
    v = record.get(key)
    return None if v is None or pd.isna(v) else float(v)


def skip(reason: str) -> str:
    return f"> **Skipped:** {reason}\n"


def _d(d) -> str:
    return "d_model=?" if d is None or (isinstance(d, float) and np.isnan(d)) else f"d_model={int(d)}"


def _scale_title(d, n_scales: int) -> str:
    return f" ({_d(d)})" if n_scales > 1 else ""


def _present(ok: pd.DataFrame) -> str:
    ms = sorted(ok["metric"].unique()) if not ok.empty else []
    return ", ".join(f"`{m}`" for m in ms) if ms else "none"


@dataclass
class ReportContext:
    """What every section of the report reads (the table, its ok rows, where figures go, the
    table's source and the command that regenerates the report) and what the sections write:
    the parts of report.md in order, and the figures drawn. A section is a function of it
    (`paper_sections`, `figure_sections`, `placement`, `markdown`)."""

    df: pd.DataFrame
    ok: pd.DataFrame
    fig_dir: Path
    source: str
    regen_cmd: str
    parts: list[str] = field(default_factory=list)
    figures: list[FigureRef] = field(default_factory=list)

    @classmethod
    def of(cls, df: pd.DataFrame, fig_dir: Path, source: str, regen_cmd: str) -> ReportContext:
        return cls(df, ok_rows(df), fig_dir, source, regen_cmd)

    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def figure(self, ref: FigureRef | None) -> bool:
        """Add the figure `ref` (numbered in order, PNG shown, SVG linked); False when there is none."""
        if ref is None:
            return False
        self.figures.append(ref)
        rel = f"{self.fig_dir.name}/{ref.stem}"
        self.add(f"**Figure {len(self.figures)}. {ref.title}.** {ref.caption}\n\n"
                 f"![{ref.title}]({rel}.png)\n\n[SVG version]({rel}.svg)\n")
        return True
