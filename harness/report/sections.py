"""What every part of the report shares: the section helpers and the base the section mixins
(`paper_sections`, `figure_sections`) build on; `markdown.Report` puts them together."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import figures as F

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




class ReportBase:
    """The state every section reads and the way it writes (see markdown.Report)."""

    df: pd.DataFrame
    ok: pd.DataFrame
    fig_dir: Path
    parts: list[str]
    figures: list[F.FigureRef]

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, ref: F.FigureRef | None) -> bool:
        raise NotImplementedError
