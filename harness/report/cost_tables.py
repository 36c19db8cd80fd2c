"""Measured-cost tables behind the report's efficiency part: per-length summaries, the timing
clocks used, ratios to the Transformer, the op comparison and the performance-efficiency Pareto
front. Pure DataFrame -> DataFrame functions, like harness.report.tables."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness import metrics
from harness.metrics import x_axis

from .stats import pair_signs
from .tables import MODEL_KEYS, Score, at_smallest, full_transformer, metric_rows, order, summarize

# --------------------------------------------------------------------------- efficiency

#: what must agree for two timings to be compared; `subtask` keeps apart what one task measured
#: in several ways (mixer_efficiency's step-by-step path)
CONTEXT_KEYS = ["d_model", "device", "dtype", "backend", "batch", "task", "subtask"]


def _fill_keys(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.copy()
    for k in keys:
        if k not in df:
            df[k] = ""
        elif pd.api.types.is_numeric_dtype(df[k]):
            df[k] = df[k].fillna(-1)
        else:
            df[k] = df[k].astype(object).fillna("")
    return df


def efficiency_summary(ok: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean/std/n across seeds per model and length (`context_len` for decode, else `seq_len`).

    Missing context_len falls back to seq_len. `iqr` is the mean of the table's `spread` column.
    """
    rows = metric_rows(ok, metric)
    if rows.empty:
        return pd.DataFrame()
    x = x_axis(metric)
    rows = rows.copy()
    if x == "context_len":
        rows["context_len"] = rows["context_len"].fillna(rows["seq_len"])
    keys = CONTEXT_KEYS + ["variant", "layout", x]
    rows = _fill_keys(rows, CONTEXT_KEYS)
    s = summarize(rows, metric, keys)
    iqr = rows.groupby(keys, dropna=False)["spread"].mean().reset_index().rename(columns={"spread": "iqr"})
    return order(s.merge(iqr, on=keys, how="left"))


#: one mixer layer (harness.tasks.mixer_efficiency): times and peak memory vs seq_len
MIXER_LAYER_METRICS = tuple(metrics.names(prefix="mixer_", task="mixer_efficiency"))
#: its op alone, one row per implementation (`subtask`: harness, sdpa, fla_naive, fla)
OP_METRICS = tuple(metrics.names(prefix="op_"))
TIMED_METRICS = tuple(metrics.names("time"))


def timing_clocks(ok: pd.DataFrame) -> dict[str, int]:
    """Timed rows (TIMED_METRICS) per clock, plus `loaded`: how many
    were flagged as measured on a loaded machine (harness.runtime.timing.Timing.loaded). Tables written
    before the clock column count as `wall`."""
    rows = ok[ok["metric"].isin(TIMED_METRICS)]
    if rows.empty:
        return {}
    clock = rows["clock"].fillna("wall") if "clock" in rows else pd.Series("wall", index=rows.index)
    out = {str(k): int(v) for k, v in clock.value_counts().items()}
    out["loaded"] = int(rows["loaded"].fillna(False).astype(bool).sum()) if "loaded" in rows else 0
    return out


def vs_transformer(ok: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each model's value next to the full-attention Transformer's at the same context
    (d_model, device, dtype, backend, batch, task and length). ratio = value / transformer value."""
    s = efficiency_summary(ok, metric)
    if s.empty:
        return s
    x = x_axis(metric)
    keys = CONTEXT_KEYS + [x]
    base = full_transformer(s)  # a sliding-window Transformer is compared with it like any model
    tf = s[base][keys + ["mean", "std", "n"]].rename(columns={"mean": "tf_mean", "std": "tf_std", "n": "tf_n"})
    other = s[~base]
    m = other.merge(tf, on=keys, how="inner")
    m["ratio"] = m["mean"] / m["tf_mean"]
    return order(m)


# --------------------------------------------------------------------------- Pareto front

def pareto_mask(points: np.ndarray) -> np.ndarray:
    """True for the rows of `points` [n, objectives] that no other row dominates, every objective
    to be maximised (negate a cost)."""
    p = np.asarray(points, float)
    keep = np.ones(len(p), bool)
    for i in range(len(p)):
        dominated = (p >= p[i]).all(1) & (p > p[i]).any(1)
        keep[i] = not dominated.any()
    return keep


def decidably_dominated(efficiency: np.ndarray, score: np.ndarray, std: np.ndarray) -> np.ndarray:
    """True for the points that another point beats beyond the seeds' spread: at least as
    efficient and a score higher by more than the two stds summed (stats.pair_signs). A point
    off the mean front but not decidably dominated ties with the front."""
    better = pair_signs(score, std) < 0  # [i, j]: j decidably above i
    as_cheap = np.asarray(efficiency, float)[None, :] >= np.asarray(efficiency, float)[:, None]
    return (better & as_cheap).any(1)


def pareto_lengths(ok: pd.DataFrame) -> list[int]:
    """Lengths for the Pareto front: the paper's 4,096 and 32,768 if present, else the shortest and longest."""
    lens = sorted({int(v) for v in metric_rows(ok, "mixer_flops_per_token")["seq_len"].dropna()})
    if not lens:
        return []
    if 4096 in lens and 32768 in lens:
        return [4096, 32768]
    return sorted({lens[0], lens[-1]})


def pareto_points(ok: pd.DataFrame, score: Score, seq_len: int) -> pd.DataFrame:
    """Per model: whole-model mixer FLOPs/token at `seq_len`, its inverse, the score, and front membership."""
    fl = metric_rows(ok, "mixer_flops_per_token")
    fl = at_smallest(fl[fl["seq_len"] == seq_len], "batch")
    if fl.empty:
        return pd.DataFrame()
    flops = fl.groupby(MODEL_KEYS, dropna=False)["value"].mean().reset_index().rename(columns={"value": "flops"})
    sc = score.learned_summary()  # a model that did not learn is no point on a quality front
    pts = sc.merge(flops, on=MODEL_KEYS, how="inner")
    matched_on = "d_model, variant, layout"
    if pts.empty:  # accuracy and costs at different widths: fall back to the widest cost rows
        widest = flops[flops["d_model"] == flops["d_model"].max()].drop(columns="d_model")
        pts = sc.merge(widest, on=["variant", "layout"], how="inner")
        matched_on = "variant, layout (costs at the widest d_model)"
    if pts.empty:
        return pts
    pts = pts[pts["flops"] > 0].copy()
    pts["inv_flops"] = 1.0 / pts["flops"]
    y = pts["mean"] if score.higher_is_better else -pts["mean"]
    pts["on_front"] = pareto_mask(np.column_stack([pts["inv_flops"].values, y.values]))
    pts["ties_front"] = ~pts["on_front"] & ~decidably_dominated(pts["inv_flops"].values, y.values,
                                                                pts["std"].values)
    pts["seq_len"] = seq_len
    pts.attrs["matched_on"] = matched_on
    return order(pts)



def op_comparison(ok: pd.DataFrame) -> pd.DataFrame:
    """The op-level rows of `mixer_efficiency`, one row per (d_model, device, dtype, variant,
    seq_len): for each op metric, the mean per implementation in columns `<metric>:<impl>`."""
    rows = ok[ok["metric"].isin(OP_METRICS)]
    if rows.empty or "subtask" not in rows:
        return pd.DataFrame()
    keys = ["d_model", "device", "dtype", "variant", "seq_len"]
    rows = _fill_keys(rows, ["device", "dtype", "subtask"])
    piv = rows.pivot_table(index=keys, columns=["metric", "subtask"], values="value", aggfunc="mean")
    piv.columns = [f"{m}:{i}" for m, i in piv.columns]
    return order(piv.reset_index())
