"""Normalising a results table for the report: every column of the table's schema present and
typed, the Transformer's rows unified, placements folded into the layout (`normalize`), and the
rows every section reads (`ok_rows`: status ok, finite value). The table was read by the store
(`harness.sweep.store.load_results`); nothing here reads or writes a file."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.model.layout import DEFAULT_PLACEMENT

REQUIRED_COLUMNS = [
    "suite", "cell_id", "variant", "layout", "placement", "n_layers", "n_full_attn_layers", "d_model", "seq_len",
    "seed", "task", "metric", "value", "unit", "status", "error", "backend", "device", "dtype",
    "torch_version", "harness_version", "git_sha", "started_at", "wall_s",
]
OPTIONAL_COLUMNS = ["context_len", "subtask", "spread", "n_repeats", "batch", "n_heads"]
_STR_COLUMNS = ["suite", "cell_id", "variant", "layout", "placement", "task", "metric", "unit", "status", "error",
                "backend", "device", "dtype", "torch_version", "harness_version", "git_sha", "subtask"]
_NUM_COLUMNS = ["n_layers", "n_full_attn_layers", "d_model", "seq_len", "seed", "value", "wall_s",
                "context_len", "spread", "n_repeats", "batch", "n_heads"]


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with every schema column present and typed, and Transformer rows unified.

    - missing columns are added empty; numbers are coerced to float, text to str;
    - missing status counts as "ok"; missing seed as 0;
    - a row is the Transformer baseline if its layout is "transformer" or its variant "attention":
      both are then set, so tables can treat it as one (variant, layout) pair;
    - `ratio` keeps the stored layout, and a placement other than the paper's interleave is
      folded into `layout` ("3:1 bottom"), so that no table averages placements together
      (harness.report.placement).
    """
    df = df.copy()
    for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    for c in _NUM_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in _STR_COLUMNS:
        df[c] = df[c].astype(object).where(df[c].notna(), None)
        df[c] = df[c].map(lambda v: None if v is None else str(v))
    df["status"] = df["status"].fillna("ok").str.lower()
    df["seed"] = df["seed"].fillna(0.0)
    df["subtask"] = df["subtask"].fillna("")
    for c in ("device", "dtype", "backend"):
        df[c] = df[c].fillna("")
    df["variant"] = df["variant"].fillna("?")
    df["layout"] = df["layout"].fillna("?")
    df["placement"] = df["placement"].fillna(DEFAULT_PLACEMENT)  # tables from before the placement axis
    df["metric"] = df["metric"].fillna("?")
    df["task"] = df["task"].fillna("")
    is_tf = (df["layout"] == "transformer") | (df["variant"] == "attention")
    df.loc[is_tf, "layout"] = "transformer"
    df.loc[is_tf, "variant"] = "attention"
    if "started_at" in df.columns:
        df["started_at"] = pd.to_datetime(df["started_at"], errors="coerce", utc=True)
    if "ratio" not in df.columns:  # not yet folded (normalize is idempotent)
        df["ratio"] = df["layout"]
        placed = df["placement"] != DEFAULT_PLACEMENT
        df.loc[placed, "layout"] = df.loc[placed, "layout"] + " " + df.loc[placed, "placement"]
    return df.reset_index(drop=True)


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The successful measurements with a finite value."""
    if df.empty:
        return df
    return df[(df["status"] == "ok") & np.isfinite(df["value"].astype(float))].reset_index(drop=True)


def suite_name(df: pd.DataFrame, fallback: str = "results") -> str:
    names = sorted({str(s) for s in df.get("suite", pd.Series(dtype=object)).dropna() if str(s)})
    if not names:
        return fallback
    return "+".join(names)
