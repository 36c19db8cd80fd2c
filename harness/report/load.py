"""Reading the results table and putting it into one predictable shape for the report."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = [
    "suite", "cell_id", "variant", "layout", "n_layers", "n_full_attn_layers", "d_model", "seq_len",
    "seed", "task", "metric", "value", "unit", "status", "error", "backend", "device", "dtype",
    "torch_version", "harness_version", "git_sha", "started_at", "wall_s",
]
OPTIONAL_COLUMNS = ["context_len", "subtask", "spread", "n_repeats", "batch", "n_heads"]
_STR_COLUMNS = ["suite", "cell_id", "variant", "layout", "task", "metric", "unit", "status", "error",
                "backend", "device", "dtype", "torch_version", "harness_version", "git_sha", "subtask"]
_NUM_COLUMNS = ["n_layers", "n_full_attn_layers", "d_model", "seq_len", "seed", "value", "wall_s",
                "context_len", "spread", "n_repeats", "batch", "n_heads"]


def load_results(path: Path | str) -> pd.DataFrame:
    """Load the results table: prefer the store's loader, else read parquet directly."""
    path = Path(path)
    try:
        from harness.sweep.store import load_results as store_load  # type: ignore
    except Exception:  # the store may not exist yet, or fail to import
        store_load = None
    if store_load is not None:
        try:
            return store_load(path)
        except ValueError as exc:  # e.g. a hand-made table with extra columns: read it as it is
            import warnings

            warnings.warn(f"harness.sweep.store could not load {path} ({exc}); reading the parquet directly")
    return _read_parquet(path)


def _read_parquet(path: Path) -> pd.DataFrame:
    if path.is_file():
        return pd.read_parquet(path)
    if path.is_dir():
        main = path / "results.parquet"
        if main.exists():
            return pd.read_parquet(main)
        parts = sorted(path.glob("*.parquet"))
        if parts:
            return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        raise FileNotFoundError(f"no results table in {path}: expected {main} (or *.parquet files)")
    raise FileNotFoundError(f"results path {path} does not exist")


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with every schema column present and typed, and Transformer rows unified.

    - missing columns are added empty; numbers are coerced to float, text to str;
    - missing status counts as "ok"; missing seed as 0;
    - a row is the Transformer baseline if its layout is "transformer" or its variant "attention":
      both are then set, so tables can treat it as one (variant, layout) pair.
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
    df["metric"] = df["metric"].fillna("?")
    df["task"] = df["task"].fillna("")
    is_tf = (df["layout"] == "transformer") | (df["variant"] == "attention")
    df.loc[is_tf, "layout"] = "transformer"
    df.loc[is_tf, "variant"] = "attention"
    if "started_at" in df.columns:
        df["started_at"] = pd.to_datetime(df["started_at"], errors="coerce", utc=True)
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
