"""Pure DataFrame -> DataFrame functions behind every table and figure of the report.

All functions take the normalised table of successful rows (see `data.normalize` / `data.ok_rows`)
and never touch files. Aggregation is always two-step: first one number per seed (the mean over
everything not kept as a key: subtasks, repeats, ...), then mean, sample std and count across seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness import metrics
from harness.metrics import get_metric, higher_is_better, lm_eval_base

from .stats import is_tie
from .style import layout_sort_key, sort_layouts, sort_variants, variant_sort_key

SCALE = ["d_model"]
MODEL_KEYS = ["d_model", "variant", "layout"]  # layout carries the placement and window ("3:1 bottom w=64")
#: the full-attention Transformer's layout after normalisation; a windowed one reads "transformer w=64"
TRANSFORMER_LAYOUT = "transformer"
ANALYTIC_METRICS = metrics.names("analytic")
#: the LM-quality metric to score by, in order of preference (the first one present). Never
#: `final_loss`: for a recall task (mqar, niah) it is the training loss on the answers, not LM quality
LM_METRICS = ["val_loss", "val_bpb", "val_ppl"]
#: the task whose rows are LM quality (docs/metrics.md)
LM_TASK = "lm"
#: why a table has no LM score (Table 1.3, claim 3.3, the LM figures)
NO_LM_ROWS = ("no `lm_eval/*` accuracies and no `val_loss`, `val_bpb` or `val_ppl` rows of the `lm` task with "
              "status ok (a recall task's `final_loss` is its training loss on the answers, not LM quality)")
#: lm-eval per-task metric preference; only metrics the catalogue calls higher-is-better are averaged
LM_EVAL_PREF = ["acc", "acc_norm", "exact_match", "em", "f1"]


# --------------------------------------------------------------------------- basic aggregation

def full_transformer(df: pd.DataFrame) -> pd.Series:
    """True for the rows of the full-attention Transformer, the baseline (a sliding-window
    Transformer is another model: its layout reads "transformer w=64")."""
    return df["layout"] == TRANSFORMER_LAYOUT


def metric_rows(ok: pd.DataFrame, metric: str) -> pd.DataFrame:
    return ok[ok["metric"] == metric]


def per_seed(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One value per (keys, seed): the mean over all rows sharing them."""
    if rows.empty:
        return pd.DataFrame(columns=keys + ["seed", "value"])
    return rows.groupby(keys + ["seed"], dropna=False, sort=False)["value"].mean().reset_index()


def across_seeds(ps: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """mean, sample std (ddof=1; NaN for one seed) and n seeds per keys."""
    if ps.empty:
        return pd.DataFrame(columns=keys + ["mean", "std", "n"])
    out = ps.groupby(keys, dropna=False, sort=False)["value"].agg(mean="mean", std="std", n="count").reset_index()
    return order(out)


def summarize(ok: pd.DataFrame, metric: str, keys: list[str]) -> pd.DataFrame:
    """Mean/std/n across seeds of `metric`, per `keys` (everything else averaged within a seed)."""
    return across_seeds(per_seed(metric_rows(ok, metric), keys), keys)


def order(df: pd.DataFrame) -> pd.DataFrame:
    """Sort rows by d_model, variant (fixed order), layout (by attention fraction), then lengths."""
    if df.empty:
        return df.reset_index(drop=True)
    tmp = df.copy()
    sort_cols = [c for c in ("d_model", "device", "dtype", "batch", "task") if c in tmp.columns]
    if "variant" in tmp.columns:
        tmp["_v"] = tmp["variant"].map(variant_sort_key)
        sort_cols.append("_v")
    if "layout" in tmp.columns:
        tmp["_l"] = tmp["layout"].map(layout_sort_key)
        sort_cols.append("_l")
    sort_cols += [c for c in ("seq_len", "context_len", "subtask") if c in tmp.columns]
    tmp = tmp.sort_values(sort_cols, kind="stable", na_position="first")
    return tmp.drop(columns=[c for c in ("_v", "_l") if c in tmp.columns]).reset_index(drop=True)


def has_metric(ok: pd.DataFrame, metric: str) -> bool:
    return bool((ok["metric"] == metric).any()) if not ok.empty else False


def scales(df: pd.DataFrame) -> list:
    """The d_model values present (NaN kept as one scale)."""
    vals = df["d_model"].drop_duplicates().tolist() if "d_model" in df.columns else []
    return sorted(vals, key=lambda v: (np.isnan(v), v if not np.isnan(v) else 0))


def at_scale(df: pd.DataFrame, d_model) -> pd.DataFrame:
    if d_model is None or (isinstance(d_model, float) and np.isnan(d_model)):
        return df[df["d_model"].isna()]
    return df[df["d_model"] == d_model]


# --------------------------------------------------------------------------- accuracy scores

#: recall within this (absolute) of the plateau counts as "not learned" (docs/metrics.md)
NOT_LEARNED_MARGIN = 0.05
REFERENCE_METRICS = ["recall_chance", "recall_plateau"]


def recall_levels(ok: pd.DataFrame) -> pd.DataFrame:
    """Per model (MODEL_KEYS): `chance` and `plateau` of its recall rows (the means of the
    `recall_chance` / `recall_plateau` companion rows over subtasks, lengths and seeds, the same
    averaging as the score). Empty when the table has no such rows (results from before them)."""
    rows = ok[ok["metric"].isin(REFERENCE_METRICS)]
    if rows.empty:
        return pd.DataFrame(columns=MODEL_KEYS + ["chance", "plateau"])
    wide = rows.groupby(MODEL_KEYS + ["metric"], dropna=False)["value"].mean().unstack("metric")
    wide = wide.rename(columns={"recall_chance": "chance", "recall_plateau": "plateau"}).reset_index()
    wide.columns.name = None
    for c in ("chance", "plateau"):
        if c not in wide.columns:
            wide[c] = np.nan
    return wide[MODEL_KEYS + ["chance", "plateau"]]


def recall_reference(ok: pd.DataFrame, by: str | None = None) -> dict | None:
    """{value of `by` (None: one entry): {"chance": c, "plateau": p}} for reference lines; None
    without companion rows. Levels differ between models only through the task's parameters, so
    each is the mean over the rows of that group."""
    rows = ok[ok["metric"].isin(REFERENCE_METRICS)]
    if rows.empty:
        return None
    groups = [(None, rows)] if by is None else list(rows.groupby(by, dropna=False))
    return {k: {"chance": g.loc[g["metric"] == "recall_chance", "value"].mean(),
                "plateau": g.loc[g["metric"] == "recall_plateau", "value"].mean()} for k, g in groups}


@dataclass
class Score:
    """An accuracy score: one value per (d_model, variant, layout, seed).

    `levels` (recall only): per model chance and plateau; `summary()` then marks each model
    `learned` (mean above plateau + NOT_LEARNED_MARGIN). Other scores are always `learned`."""

    kind: str  # "recall" | "lm_eval" | "lm"
    metric: str  # column label, e.g. "recall_acc" or "lm_eval avg" or "val_loss"
    description: str
    unit: str
    higher_is_better: bool
    per_seed: pd.DataFrame  # d_model, variant, layout, seed, value
    parts: list[str] = field(default_factory=list)  # subtasks / lm-eval tasks averaged
    levels: pd.DataFrame | None = None

    def summary(self) -> pd.DataFrame:
        s = across_seeds(self.per_seed, MODEL_KEYS)
        if self.levels is None or self.levels.empty or s.empty:
            return s.assign(learned=True)
        s = s.merge(self.levels, on=MODEL_KEYS, how="left")
        s["learned"] = ~(s["mean"] <= s["plateau"] + NOT_LEARNED_MARGIN)  # NaN plateau: learned
        return order(s)

    def learned_summary(self) -> pd.DataFrame:
        """summary() without the models that did not learn (for rankings, fronts and claims)."""
        s = self.summary()
        return s[s["learned"]].reset_index(drop=True)

    def not_learned(self) -> pd.DataFrame:
        s = self.summary()
        return s[~s["learned"]].reset_index(drop=True)


def recall_score(ok: pd.DataFrame) -> Score | None:
    rows = metric_rows(ok, "recall_acc")
    if rows.empty:
        return None
    subtasks = sorted({s for s in rows["subtask"] if s})
    lens = sorted({int(x) for x in rows["seq_len"].dropna()})
    desc = "recall_acc averaged over " + (f"subtasks {', '.join(subtasks)}" if subtasks else "all recall rows")
    if lens:
        desc += f" and lengths {', '.join(map(str, lens))}"
    return Score("recall", "recall_acc", desc, "accuracy", True, per_seed(rows, MODEL_KEYS), subtasks,
                 levels=recall_levels(ok))


def lm_eval_tasks(ok: pd.DataFrame) -> pd.DataFrame:
    """The lm-eval rows to average: one metric per task (acc, else acc_norm, ...), with a `lm_task` column."""
    rows = ok[ok["metric"].str.startswith("lm_eval/")]
    if rows.empty:
        return rows.assign(lm_task=pd.Series(dtype=object), lm_metric=pd.Series(dtype=object))
    parts = rows["metric"].str.split("/", n=2, expand=True)
    rows = rows.assign(lm_task=parts[1], lm_metric=parts[2] if parts.shape[1] > 2 else None)
    accuracy = rows["metric"].map(lambda m: higher_is_better(m) is True and lm_eval_base(m) is not None)
    rows = rows[rows["lm_metric"].notna() & accuracy]
    chosen = {}
    for task, names in rows.groupby("lm_task")["lm_metric"]:
        present = set(names)
        pick = next((m for m in LM_EVAL_PREF if m in present), None)
        if pick is None:
            pick = next((m for m in sorted(present) if "acc" in m), None)
        if pick is not None:
            chosen[task] = pick
    return rows[rows["lm_metric"] == rows["lm_task"].map(chosen)]


def lm_eval_score(ok: pd.DataFrame) -> Score | None:
    rows = lm_eval_tasks(ok)
    if rows.empty:
        return None
    # one value per model, seed and task, then keep the tasks every model of that scale has
    ps = rows.groupby(MODEL_KEYS + ["seed", "lm_task"], dropna=False)["value"].mean().reset_index()
    keep = []
    for d in scales(ps):
        sub = at_scale(ps, d)
        n_models = sub[["variant", "layout"]].drop_duplicates().shape[0]
        counts = sub.drop_duplicates(["variant", "layout", "lm_task"]).groupby("lm_task").size()
        common = counts[counts == n_models].index.tolist() or counts.index.tolist()
        keep.append(sub[sub["lm_task"].isin(common)])
    ps = pd.concat(keep, ignore_index=True)
    tasks = sorted(ps["lm_task"].unique())
    names = sorted({f"{t}/{m}" for t, m in rows[["lm_task", "lm_metric"]].drop_duplicates().itertuples(index=False)
                    if t in tasks})
    score = ps.groupby(MODEL_KEYS + ["seed"], dropna=False)["value"].mean().reset_index()
    desc = f"mean lm-eval accuracy over {len(tasks)} task(s): {', '.join(names)}"
    return Score("lm_eval", "lm_eval avg", desc, "accuracy", True, score, tasks)


def lm_score(ok: pd.DataFrame) -> Score | None:
    """The first LM-quality metric of the `lm` task present among val_loss, val_bpb, val_ppl
    (None without: a recall task's final_loss is no LM score)."""
    lm = ok[ok["task"] == LM_TASK]
    for m in LM_METRICS:
        rows = metric_rows(lm, m)
        if not rows.empty:
            unit = rows["unit"].dropna()
            unit = unit.iloc[0] if len(unit) else ""
            better = bool(higher_is_better(m))
            return Score("lm", m, f"{m} ({'higher' if better else 'lower'} is better)", unit, better,
                         per_seed(rows, MODEL_KEYS), [])
    return None


def accuracy_score(ok: pd.DataFrame) -> Score | None:
    """The score used for 'best ratio': recall, else the lm-eval average, else the LM loss (lower better)."""
    for fn in (recall_score, lm_eval_score, val_loss_score):
        s = fn(ok)
        if s is not None:
            return s
    return None


def val_loss_score(ok: pd.DataFrame) -> Score | None:
    rows = metric_rows(ok, "val_loss")
    if rows.empty:
        return None
    return Score("lm", "val_loss", "val_loss (lower is better)", get_metric("val_loss").unit, False,
                 per_seed(rows, MODEL_KEYS), [])


def all_scores(ok: pd.DataFrame) -> list[Score]:
    return [s for s in (recall_score(ok), lm_eval_score(ok), lm_score(ok)) if s is not None]


# --------------------------------------------------------------------------- paper-shaped tables

def best_ratio_per_variant(score: Score) -> pd.DataFrame:
    """Per (d_model, variant): the layout with the best mean over seeds (Tables 2-3 form).

    Only learned models compete (`Score.summary()['learned']`); a variant none of whose layouts
    learned keeps one row with layout None and `learned` False, so a table shows it as such.
    Columns: d_model, variant, layout, mean, std, n, n_layouts, learned, tied (the other learned
    layouts within the seeds' spread of the best: the best is not decided among them), pure_mean,
    transformer_mean.
    """
    cols = ["d_model", "variant", "layout", "mean", "std", "n", "n_layouts", "learned", "tied", "pure_mean",
            "transformer_mean"]
    s = score.summary()
    if s.empty:
        return pd.DataFrame(columns=cols)
    s = s.dropna(subset=["mean"])
    n_layouts = s.groupby(["d_model", "variant"], dropna=False).size()
    cand = s[s["learned"]]
    grp = cand.groupby(["d_model", "variant"], dropna=False)["mean"]
    idx = grp.idxmax() if score.higher_is_better else grp.idxmin()
    best = cand.loc[idx.values].copy()
    none = n_layouts.index.difference(pd.MultiIndex.from_frame(best[["d_model", "variant"]]))
    if len(none):
        best = pd.concat([best, pd.DataFrame({"d_model": [d for d, _ in none], "variant": [v for _, v in none],
                                              "layout": None, "mean": np.nan, "std": np.nan, "n": 0,
                                              "learned": False})], ignore_index=True)
    best["n_layouts"] = [int(n_layouts.get((d, v), 0)) for d, v in zip(best["d_model"], best["variant"])]
    best["tied"] = [_tied_layouts(cand, r) for r in best.itertuples(index=False)]
    pure = s[s["layout"] == "pure"].set_index(["d_model", "variant"])["mean"]
    best["pure_mean"] = [pure.get((d, v), np.nan) for d, v in zip(best["d_model"], best["variant"])]
    tf = s[full_transformer(s)].groupby("d_model", dropna=False)["mean"].mean()
    best["transformer_mean"] = [tf.get(d, np.nan) for d in best["d_model"]]
    return order(best[cols])


def _tied_layouts(cand: pd.DataFrame, best) -> list[str]:
    """The learned layouts of `best`'s (d_model, variant) other than its own whose mean ties with
    the best's (stats.is_tie)."""
    if best.layout is None or pd.isna(best.layout):
        return []
    same = cand[(cand["variant"] == best.variant) & (cand["layout"] != best.layout)
                & (cand["d_model"].fillna(-1) == (-1 if pd.isna(best.d_model) else best.d_model))]
    return sort_layouts(r.layout for r in same.itertuples(index=False)
                        if is_tie(r.mean, r.std, best.mean, best.std))


def ratio_by_variant(summary: pd.DataFrame, value: str = "mean") -> pd.DataFrame:
    """Pivot a (variant, layout) summary of ONE scale: rows = layouts (sparse -> dense), cols = variants."""
    if summary.empty:
        return pd.DataFrame()
    p = summary.pivot_table(index="layout", columns="variant", values=value, aggfunc="mean", dropna=False)
    p = p.reindex(index=sort_layouts(p.index), columns=sort_variants(p.columns))
    p.index.name, p.columns.name = "layout", None
    return p


def recall_subtasks(ok: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """recall_acc per subtask (averaged over lengths within a seed), mean/std/n across seeds."""
    keys = keys or MODEL_KEYS
    return summarize(ok, "recall_acc", keys + ["subtask"])


def recall_subtasks_at_best(ok: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per-subtask recall for each variant at its best layout (Table 6 form), long format."""
    sub = recall_subtasks(ok)
    if sub.empty or best.empty:
        return sub.iloc[0:0]
    keys = best[["d_model", "variant", "layout"]]
    return order(sub.merge(keys, on=["d_model", "variant", "layout"], how="inner"))


def recall_by_length(ok: pd.DataFrame) -> pd.DataFrame:
    """recall_acc per model and length (mean over subtasks within a seed), across seeds."""
    return summarize(ok, "recall_acc", MODEL_KEYS + ["seq_len"])


def at_smallest(rows: pd.DataFrame, col: str) -> pd.DataFrame:
    """The rows at the smallest value of `col` (e.g. batch) when the table has several."""
    vals = rows[col].dropna()
    if vals.nunique() > 1:
        return rows[rows[col] == vals.min()]
    return rows
