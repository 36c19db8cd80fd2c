"""Cost tables behind the report's efficiency part: the analytic costs per model and per layer
(beside the paper's formulas), and the measured ones: per-length summaries, the timing clocks
used, ratios to the Transformer, the op comparison and the performance-efficiency Pareto front.
Pure DataFrame -> DataFrame functions, like harness.report.tables."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness import metrics
from harness.metrics import x_axis

from .stats import pair_signs
from .tables import (
    ANALYTIC_METRICS,
    MODEL_KEYS,
    Score,
    at_scale,
    at_smallest,
    full_transformer,
    metric_rows,
    order,
    scales,
    summarize,
)

# --------------------------------------------------------------------------- analytic

def analytic_costs(ok: pd.DataFrame, seq_len: float | None = None) -> pd.DataFrame:
    """Analytic costs per (d_model, variant, layout) at one length (Table 7 form, extended).

    Length-dependent metrics are taken at `seq_len` (default: the longest analytic length of that
    scale); the smallest batch is used when several were swept. Columns: d_model, variant, layout,
    seq_len, then one column per analytic metric present.
    """
    rows = ok[ok["metric"].isin(ANALYTIC_METRICS)]
    if rows.empty:
        return pd.DataFrame()
    rows = at_smallest(rows, "batch")
    out = []
    for d in scales(rows):
        sub = at_scale(rows, d)
        L = seq_len if seq_len is not None else sub["seq_len"].max()
        pick = sub[(sub["seq_len"] == L) | sub["seq_len"].isna()] if not np.isnan(L) else sub
        wide = pick.groupby(MODEL_KEYS + ["metric"], dropna=False)["value"].mean().unstack("metric")
        wide = wide.reset_index()
        wide.insert(3, "seq_len", L)
        out.append(wide)
    res = pd.concat(out, ignore_index=True)
    cols = ["d_model", "variant", "layout", "seq_len"] + [m for m in ANALYTIC_METRICS if m in res.columns]
    res.columns.name = None
    return order(res[cols])


def flops_per_layer_vs_paper(ok: pd.DataFrame, formulas: list[dict]) -> pd.DataFrame:
    """Our per-layer mixer FLOPs next to the paper's Table-7 formula evaluated at our shapes.

    Uses each variant's 'pure' rows (the Transformer's for attention) at the longest length.
    """
    rows = metric_rows(ok, "mixer_flops_per_token_per_layer")
    if rows.empty:
        return pd.DataFrame()
    rows = at_smallest(rows, "batch")
    by_var = {f["variant"]: f for f in formulas}
    out = []
    for (d, v), sub in rows.groupby(["d_model", "variant"], dropna=False):
        pref = sub[sub["layout"].isin(["pure", "transformer"])]
        sub = pref if not pref.empty else sub
        L = sub["seq_len"].max()
        if not np.isnan(L):
            sub = sub[sub["seq_len"] == L]
        heads = sub["n_heads"].dropna()
        H = float(heads.mode().iloc[0]) if len(heads) else np.nan
        ours = sub["value"].mean()
        f = by_var.get(v)
        paper_val = np.nan
        if f is not None:
            if f["form"] == "L*d_model":
                paper_val = f["coeff"] * L * d
            elif f["form"] == "d_model":
                paper_val = f["coeff"] * d
            elif f["form"] == "d_model^2/H" and H > 0:
                paper_val = f["coeff"] * d * d / H
        out.append({"d_model": d, "variant": v, "n_heads": H, "seq_len": L, "ours": ours,
                    "paper_formula": f["formula"] if f else "", "paper_value": paper_val,
                    "ours_over_paper": ours / paper_val if paper_val and not np.isnan(paper_val) else np.nan})
    return order(pd.DataFrame(out))


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
