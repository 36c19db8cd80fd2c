"""The results table's columns and dtypes, defined once.

The table is long ("tidy"): one row per measurement. Every row written by the store goes through
`conform`, so a table built from any mix of cells, executors or versions has the same columns in
the same order with the same dtypes. docs/suites.md describes each column; keep the two in step.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

#: Cell / row statuses. "ok" is the only status that counts as a finished measurement.
STATUSES = ("ok", "failed", "oom", "diverged")
OK = "ok"

#: (column, pandas dtype), in table order: identity, measurement, provenance.
COLUMNS: list[tuple[str, str]] = [
    # identity: where the row comes from (copied from the cell)
    ("suite", "string"),
    ("cell_id", "string"),
    ("task", "string"),
    ("variant", "string"),
    ("layout", "string"),
    ("placement", "string"),  # where the layout's attention layers sit (harness.model.layout)
    ("window", "Int64"),  # sliding-window attention's window (ModelConfig.window); NA = full attention
    ("n_layers", "Int64"),
    ("n_full_attn_layers", "Int64"),
    ("d_model", "Int64"),
    ("n_heads", "Int64"),
    ("seq_len", "Int64"),
    ("batch", "Int64"),
    ("seed", "Int64"),
    ("params", "string"),  # the task's resolved settings, canonical JSON
    ("model_config", "string"),  # the full ModelConfig, canonical JSON
    # the measurement
    ("subtask", "string"),
    ("context_len", "Int64"),
    ("metric", "string"),
    ("value", "float64"),
    ("unit", "string"),
    ("spread", "float64"),
    ("n_repeats", "Int64"),
    # timing provenance (harness.runtime.timing.Timing): which clock `value` is, both clocks' medians,
    # the thread count, and whether the two clocks disagreed (a loaded machine)
    ("clock", "string"),
    ("wall_time_s", "float64"),
    ("cpu_time_s", "float64"),
    ("threads", "Int64"),
    ("loaded", "boolean"),
    ("status", "string"),
    ("error", "string"),
    # provenance
    ("backend", "string"),
    ("device", "string"),
    ("dtype", "string"),
    ("torch_version", "string"),
    ("harness_version", "string"),
    ("git_sha", "string"),
    ("started_at", "datetime64[us, UTC]"),
    ("wall_s", "float64"),
]
COLUMN_NAMES: list[str] = [c for c, _ in COLUMNS]
DTYPES: dict[str, str] = dict(COLUMNS)

#: Keys a task's row may carry. Everything else in a row comes from the cell and the runner.
#: `backend` / `device` let a task report what it actually used (e.g. "fla" under "auto").
TASK_ROW_KEYS = frozenset(
    {"metric", "value", "unit", "status", "error", "subtask", "context_len", "spread", "n_repeats",
     "backend", "device", "clock", "wall_time_s", "cpu_time_s", "threads", "loaded"}
)
REQUIRED_TASK_ROW_KEYS = ("metric", "value")  # the unit comes from the metric catalogue


def empty_frame() -> pd.DataFrame:
    return conform(pd.DataFrame({c: [] for c in COLUMN_NAMES}))


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return `df` with exactly the schema's columns (missing ones as NA), order and dtypes.

    Unknown columns are an error rather than silently dropped: a task that invents a column
    should be told, not lose data.
    """
    extra = [c for c in df.columns if c not in DTYPES]
    if extra:
        raise ValueError(f"columns not in the results schema: {extra}; known: {COLUMN_NAMES}")
    out = pd.DataFrame(index=df.index)
    for col, dtype in COLUMNS:
        if col in df.columns:
            s = df[col]
        else:
            s = pd.Series([pd.NA] * len(df), index=df.index, dtype="object")
        try:
            if dtype.startswith("datetime64"):
                out[col] = pd.to_datetime(s, utc=True).astype(dtype)
            elif dtype == "float64":
                out[col] = pd.to_numeric(s.astype("object").where(s.notna(), None), errors="raise").astype("float64")
            else:
                out[col] = s.astype(dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {col!r} must hold {dtype} values: {exc} (got {s.tolist()[:5]!r})") from None
    return out.reset_index(drop=True)


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return conform(pd.DataFrame.from_records(rows, columns=None)) if rows else empty_frame()
