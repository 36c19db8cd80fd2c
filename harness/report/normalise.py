"""Normalising a results table for the report: every column of the table's schema present and
typed, the Transformer's rows unified, placements and windows folded into the layout (`normalize`), and the
rows every section reads (`ok_rows`: status ok, finite value). The table was read by the store
(`harness.sweep.store.load_results`); nothing here reads or writes a file."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from harness.model.layout import DEFAULT_PLACEMENT

REQUIRED_COLUMNS = [
    "suite", "cell_id", "variant", "layout", "placement", "n_layers", "n_full_attn_layers", "d_model", "seq_len",
    "seed", "task", "metric", "value", "unit", "status", "error", "backend", "device", "dtype",
    "torch_version", "harness_version", "git_sha", "started_at", "wall_s",
]
OPTIONAL_COLUMNS = ["context_len", "subtask", "spread", "n_repeats", "batch", "n_heads", "window"]
_STR_COLUMNS = ["suite", "cell_id", "variant", "layout", "placement", "task", "metric", "unit", "status", "error",
                "backend", "device", "dtype", "torch_version", "harness_version", "git_sha", "subtask"]
_NUM_COLUMNS = ["n_layers", "n_full_attn_layers", "d_model", "seq_len", "seed", "value", "wall_s",
                "context_len", "spread", "n_repeats", "batch", "n_heads", "window"]


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with every schema column present and typed, and Transformer rows unified.

    - missing columns are added empty; numbers are coerced to float, text to str;
    - missing status counts as "ok"; missing seed as 0;
    - a row is the Transformer baseline if its layout is "transformer" or its variant "attention":
      both are then set, so tables can treat it as one (variant, layout) pair;
    - `ratio` keeps the stored layout, and a placement other than the paper's interleave is
      folded into `layout` ("3:1 bottom"), so that no table averages placements together
      (harness.report.placement); so is a sliding window ("3:1 w=64", "transformer w=64": a model
      with a window is another model), and `window` (NaN = full attention) is read from the
      `model_config` JSON where a table from before the column lacks it; and so is a head count
      other than the table's usual one ("pure h=1").
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
    df["window"] = _windows(df)
    df["metric"] = df["metric"].fillna("?")
    df["task"] = df["task"].fillna("")
    is_tf = (df["layout"] == "transformer") | (df["variant"] == "attention")
    if "ratio" not in df.columns:  # once: a folded windowed Transformer reads "transformer w=64"
        df.loc[is_tf, "layout"] = "transformer"
    df.loc[is_tf, "variant"] = "attention"
    if "started_at" in df.columns:
        df["started_at"] = pd.to_datetime(df["started_at"], errors="coerce", utc=True)
    if "ratio" not in df.columns:  # not yet folded (normalize is idempotent)
        df["ratio"] = df["layout"]
        placed = df["placement"] != DEFAULT_PLACEMENT
        df.loc[placed, "layout"] = df.loc[placed, "layout"] + " " + df.loc[placed, "placement"]
        windowed = df["window"].notna()
        if windowed.any():
            df.loc[windowed, "layout"] = df.loc[windowed, "layout"] + df.loc[windowed, "window"].map(window_suffix)
        other_heads = _other_heads(df["n_heads"])
        if other_heads.any():
            df.loc[other_heads, "layout"] = df.loc[other_heads, "layout"] + df.loc[other_heads, "n_heads"].map(
                lambda h: f" h={int(h)}")
    return df.reset_index(drop=True)


def _other_heads(n_heads: pd.Series) -> pd.Series:
    """True for the rows whose head count is not the table's usual one (its most common): a model
    with other heads is another model ("pure h=1", e.g. the recall-vs-state-size cells beside a
    grid at 2 heads), so no table averages head counts together."""
    known = n_heads.dropna()
    if known.nunique() < 2:
        return pd.Series(False, index=n_heads.index)
    usual = known.value_counts().sort_index().idxmax()  # ties: the smallest count of heads
    return n_heads.notna() & (n_heads != usual)


def window_suffix(window) -> str:
    """" w=64" for a sliding window, "" for full attention (None / NaN)."""
    return "" if window is None or pd.isna(window) else f" w={int(window)}"


def window_label(window) -> str:
    """"w=64", or "full" for full attention."""
    return window_suffix(window).strip() or "full"


def _windows(df: pd.DataFrame) -> pd.Series:
    """The `window` column as floats (NaN = full attention); where it is missing, the window that
    the row's `model_config` JSON names (tables written before the column)."""
    w = df["window"].astype(float)
    if "model_config" not in df.columns:
        return w
    todo = w.isna() & df["model_config"].astype(str).str.contains('"window"', regex=False)
    for i in df.index[todo]:
        try:
            v = json.loads(df.at[i, "model_config"]).get("window")
        except (TypeError, ValueError, AttributeError):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            w.at[i] = float(v)
    return w


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
