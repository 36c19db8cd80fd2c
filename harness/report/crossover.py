"""Where linear token mixers overtake softmax attention: crossover lengths and decode ratios.

Functions of a results table (the long DataFrame of `harness.sweep.store`; any frame with the columns
used below works), for the report and for users. Nothing is run and no rows are written.

- `measured_crossover(df, metric)`: per model (variant, layout) and measuring context, the length
  at which the model's `metric` (a time, or any cost) drops below the Transformer's and stays
  below at every longer length measured: "where the times cross".
- `analytic_crossover(df)`: the paper's L* per model, where the per-token FLOPs of one linear
  mixer equal those of one softmax mixer (harness.model.costs.crossover_length; paper §5.1:
  L* = k * d_model / (2H) when d_k = d_v = d_model / H). A hybrid shares its attention layers with
  the Transformer, so its whole-model mixer FLOPs cross the Transformer's at the same L*.
- `crossover_table(df)`: both, for train_step_s, prefill_s and decode_token_s, and one mixer
  layer's mixer_fwd_bwd_s, mixer_fwd_s and mixer_decode_step_s (x = seq_len: a decode step at
  a context of seq_len), in one frame.
- `decode_ratio(df)`: softmax / linear per-token decode latency at the longest context measured.

Definitions. The baseline is the full-attention Transformer (variant "attention", layout
"transformer", no window; a sliding-window Transformer, "transformer w=64", is a model compared
with it) measured in the same context: same d_model, n_layers, batch, device, dtype, backend and subtask (rows
lacking a column are matched on the others). Per model and length the value is the median over the table's
ok rows (seeds, repeats of a cell). ratio(L) = value / Transformer value at the same length L
(`seq_len`; `context_len` for decode_token_s). With lengths L_1 < ... < L_n where both were
measured, let j be the first index such that ratio < 1 at L_j and at every longer length:
- j > 1: status "crossed"; the crossover is interpolated linearly in (log L, log ratio) between
  L_{j-1} and L_j, i.e. log L* = log L_{j-1} + (0 - log r_{j-1}) (log L_j - log L_{j-1}) /
  (log r_j - log r_{j-1}); `lo_len`, `hi_len` = L_{j-1}, L_j.
- j = 1: status "linear_faster_everywhere", crossover_len NaN, hi_len = L_1 (L* <= L_1).
- no such j: status "softmax_faster_everywhere", crossover_len NaN, lo_len = L_n (L* > L_n).
A single length cannot bracket a crossing, so n = 1 gives one of the last two statuses.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from harness.metrics import time_metrics, x_axis

from .normalise import window_suffix

#: columns that must agree between a model and its Transformer baseline
CONTEXT_COLUMNS = ["d_model", "n_layers", "batch", "device", "dtype", "backend", "subtask"]
MODEL_COLUMNS = ["variant", "layout"]
TRANSFORMER = "attention"
#: whole-model times (efficiency task), then one mixer layer's (mixer_efficiency task)
TIME_METRICS = tuple(time_metrics())


def _ok_rows(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = df[df["metric"] == metric]
    if "status" in rows:
        rows = rows[rows["status"].fillna("ok") == "ok"]
    rows = rows[rows["value"].notna()].copy()
    x = x_axis(metric)
    if x == "context_len":
        if "context_len" not in rows:
            rows["context_len"] = rows["seq_len"]
        else:
            rows["context_len"] = rows["context_len"].astype("Float64").fillna(rows["seq_len"].astype("Float64"))
    rows["_len"] = rows[x].astype(float)
    if "window" in rows.columns and "ratio" not in rows.columns:  # a table not normalised: fold the window
        rows["layout"] = rows["layout"].astype(str) + rows["window"].map(window_suffix).astype(str)
    return rows


def crossing(lengths: Sequence[float], ratios: Sequence[float]) -> tuple[str, float, float, float]:
    """(status, crossover_len, lo_len, hi_len) for ratios = model / baseline at sorted lengths.

    See the module docstring for the rule; lengths must be increasing and ratios positive."""
    n = len(lengths)
    if n == 0:
        return "no_data", math.nan, math.nan, math.nan
    faster = [r < 1 for r in ratios]
    j = n
    while j > 0 and faster[j - 1]:
        j -= 1
    if j == n:
        return "softmax_faster_everywhere", math.nan, float(lengths[-1]), math.nan
    if j == 0:
        return "linear_faster_everywhere", math.nan, math.nan, float(lengths[0])
    l0, l1 = math.log(lengths[j - 1]), math.log(lengths[j])
    r0, r1 = math.log(ratios[j - 1]), math.log(ratios[j])
    x = l0 + (0.0 - r0) * (l1 - l0) / (r1 - r0) if r1 != r0 else l1
    return "crossed", float(math.exp(x)), float(lengths[j - 1]), float(lengths[j])


def _pairs(df: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """Median value per (context, model, length) joined with the Transformer's at the same
    context and length: columns ctx..., variant, layout, _len, value, tf_value."""
    rows = _ok_rows(df, metric)
    ctx = [c for c in CONTEXT_COLUMNS if c in rows.columns]
    if rows.empty:
        return pd.DataFrame(columns=ctx + MODEL_COLUMNS + ["_len", "value", "tf_value"]), ctx
    for c in ctx:  # NA keys would drop out of groupby
        rows[c] = rows[c].astype(object).where(rows[c].notna(), "")
    med = rows.groupby(ctx + MODEL_COLUMNS + ["_len"], sort=True)["value"].median().reset_index()
    base = (med["variant"] == TRANSFORMER) & (med["layout"] == "transformer")  # not "transformer w=64"
    tf = med[base].drop(columns=MODEL_COLUMNS).rename(columns={"value": "tf_value"})
    other = med[~base]
    return other.merge(tf, on=ctx + ["_len"], how="inner"), ctx


def measured_crossover(df: pd.DataFrame, metric: str = "prefill_s") -> pd.DataFrame:
    """Measured crossover length of every linear or hybrid model against the Transformer.

    df: the results table (e.g. `harness.sweep.store.load_results(dir)` / results.parquet); only ok
    rows of `metric` are used. metric: "train_step_s", "prefill_s", "decode_token_s" (x =
    context_len) or any metric where lower is cheaper (e.g. "model_flops_per_token").
    Returns one row per (d_model, n_layers, batch, device, dtype, backend, variant, layout):
    those columns, then metric, status ("crossed" / "linear_faster_everywhere" /
    "softmax_faster_everywhere"), crossover_len (NaN unless crossed), lo_len, hi_len (the
    bracketing lengths), n_lengths, max_len, ratio_at_max (model / Transformer at max_len, < 1:
    the linear model is cheaper there), speedup_at_max (its inverse).
    """
    pairs, ctx = _pairs(df, metric)
    cols = ctx + MODEL_COLUMNS + ["metric", "status", "crossover_len", "lo_len", "hi_len", "n_lengths",
                                  "max_len", "ratio_at_max", "speedup_at_max"]
    out = []
    pairs = pairs[(pairs["value"] > 0) & (pairs["tf_value"] > 0)]
    for key, g in pairs.groupby(ctx + MODEL_COLUMNS, sort=False):
        g = g.sort_values("_len")
        ratios = (g["value"] / g["tf_value"]).tolist()
        status, xlen, lo, hi = crossing(g["_len"].tolist(), ratios)
        out.append({**dict(zip(ctx + MODEL_COLUMNS, key if isinstance(key, tuple) else (key,))),
                    "metric": metric, "status": status, "crossover_len": xlen, "lo_len": lo, "hi_len": hi,
                    "n_lengths": len(g), "max_len": float(g["_len"].iloc[-1]), "ratio_at_max": ratios[-1],
                    "speedup_at_max": 1.0 / ratios[-1]})
    return pd.DataFrame(out, columns=cols)


def analytic_crossover(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's L* per linear/hybrid model in the table: its `analytic_crossover_len` rows
    (written by the analytic and mixer_efficiency tasks; harness.model.costs.crossover_length).

    Returns columns d_model, n_heads, variant, layout, analytic_crossover_len (one row per model)."""
    cols = ["d_model", "n_heads", "variant", "layout", "analytic_crossover_len"]
    rows = _ok_rows(df, "analytic_crossover_len") if "metric" in df.columns else df.iloc[0:0]
    rows = rows[rows["variant"] != TRANSFORMER]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    out = rows.groupby(["d_model", "n_heads", "variant", "layout"], sort=False, dropna=False)["value"].first()
    return out.rename("analytic_crossover_len").reset_index()[cols]


def crossover_table(df: pd.DataFrame, metrics: Sequence[str] = TIME_METRICS) -> pd.DataFrame:
    """`measured_crossover` for each metric present, stacked, with `analytic_crossover_len`
    (the paper's L*) joined on (d_model, variant, layout)."""
    parts = [measured_crossover(df, m) for m in metrics if (df["metric"] == m).any()]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    an = analytic_crossover(df)
    if not an.empty:
        an = an.groupby(["d_model", "variant", "layout"], sort=False)["analytic_crossover_len"].first().reset_index()
        out = out.merge(an, on=["d_model", "variant", "layout"], how="left")
    else:
        out["analytic_crossover_len"] = math.nan
    return out


def decode_ratio(df: pd.DataFrame, context_len: int | None = None, metric: str = "decode_token_s") -> pd.DataFrame:
    """Softmax / linear decode latency (`metric`: decode_token_s of a model, or
    mixer_decode_step_s of one layer) at one context length: the longest context where both
    were measured (or `context_len`). > 1: the linear model decodes faster. Columns:
    context..., variant, layout, context_len, value, transformer_value, softmax_over_linear."""
    pairs, ctx = _pairs(df, metric)
    cols = ctx + MODEL_COLUMNS + ["context_len", "value", "transformer_value", "softmax_over_linear"]
    out = []
    for key, g in pairs.groupby(ctx + MODEL_COLUMNS, sort=False):
        g = g[g["_len"] == context_len] if context_len is not None else g[g["_len"] == g["_len"].max()]
        if g.empty:
            continue
        r = g.iloc[0]
        out.append({**dict(zip(ctx + MODEL_COLUMNS, key if isinstance(key, tuple) else (key,))),
                    "context_len": int(r["_len"]), "value": r["value"],
                    "transformer_value": r["tf_value"], "softmax_over_linear": r["tf_value"] / r["value"]})
    return pd.DataFrame(out, columns=cols)
