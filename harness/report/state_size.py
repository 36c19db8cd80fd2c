"""Recall against state size (zoology's headline figure) as tables: the pure models of each
variant at their analytic recurrent-state bytes, the Transformer at its KV bytes."""
from __future__ import annotations

import pandas as pd

from .style import variant_sort_key
from .tables import across_seeds, at_smallest, metric_rows, per_seed

#: a variant's line in "recall vs state size" needs pure models at this many widths / head counts
STATE_SIZE_MIN_POINTS = 3
STATE_KEYS = ["variant", "n_layers", "d_model", "n_heads"]  # a model's state grows with its depth too


def _stored_layout(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with `layout` the stored one (`ratio`: normalise folds a head count, window or
    placement into `layout`; the figure's axis is the heads, and windows are kept out)."""
    return rows.assign(layout=rows["ratio"])


def _per_sequence_bytes(ok: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Analytic `metric` per sequence and per token of context (value / batch and / (batch ·
    seq_len)), averaged per (variant, layout, d_model, n_heads) at the smallest batch."""
    rows = at_smallest(metric_rows(ok[ok["task"].isin(["analytic", "efficiency"])], metric), "batch")
    rows = _stored_layout(rows)
    rows = rows[rows["window"].isna()]
    if rows.empty:
        return pd.DataFrame(columns=STATE_KEYS + ["layout", "per_seq", "per_token"])
    batch = rows["batch"].fillna(1.0)
    rows = rows.assign(per_seq=rows["value"] / batch, per_token=rows["value"] / (batch * rows["seq_len"]))
    return rows.groupby(STATE_KEYS + ["layout"], dropna=False)[
        ["per_seq", "per_token"]].mean().reset_index()


def recall_vs_state(ok: pd.DataFrame) -> pd.DataFrame:
    """Zoology's headline figure as a table: per recall length (`context_len`, else `seq_len`),
    the pure models of each linear variant (recall mean/std/n across seeds, mean over subtasks)
    at their analytic recurrent-state bytes per sequence (`state_bytes`, which does not depend on
    the length), and the Transformer at its KV-cache bytes per sequence at that length
    (`kv_cache_bytes` per token of context × length; the KV cache grows linearly). Both come
    from the `analytic` rows of the same (variant, n_layers, d_model, n_heads); models without
    them are left out. Columns: length, variant, n_layers, d_model, n_heads, mean, std, n, bytes,
    kind ("state" | "kv")."""
    cols = ["length", "variant", "n_layers", "d_model", "n_heads", "mean", "std", "n", "bytes", "kind"]
    rec = metric_rows(ok, "recall_acc")
    # the stored layout (`ratio`): a head count other than the table's usual one is folded into
    # `layout` ("pure h=1"), and the heads are this figure's axis; the Transformer at full attention
    rec = _stored_layout(rec)
    rec = rec[(rec["layout"] == "pure") | ((rec["layout"] == "transformer") & rec["window"].isna())]
    if rec.empty:
        return pd.DataFrame(columns=cols)
    rec = rec.assign(length=rec["context_len"].fillna(rec["seq_len"]))
    s = across_seeds(per_seed(rec, STATE_KEYS + ["layout", "length"]), STATE_KEYS + ["layout", "length"])
    state = _per_sequence_bytes(ok, "state_bytes")
    kv = _per_sequence_bytes(ok, "kv_cache_bytes")
    lin = s[s["layout"] == "pure"].merge(state[state["layout"] == "pure"], on=STATE_KEYS + ["layout"])
    lin = lin.assign(bytes=lin["per_seq"], kind="state")
    tf = s[s["layout"] == "transformer"].merge(kv[kv["layout"] == "transformer"], on=STATE_KEYS + ["layout"])
    tf = tf.assign(bytes=tf["per_token"] * tf["length"], kind="kv")
    out = pd.concat([lin, tf], ignore_index=True)
    out = out[out["bytes"] > 0].assign(_v=lambda x: x["variant"].map(variant_sort_key))
    return out.sort_values(["length", "_v", "bytes"], kind="stable")[cols].reset_index(drop=True)


def state_size_lines(points: pd.DataFrame) -> pd.DataFrame:
    """The rows of `recall_vs_state` worth drawing: per length, the linear variants with pure
    models at ≥ STATE_SIZE_MIN_POINTS widths or head counts, and the Transformer's reference rows
    at the lengths where some variant has them. Empty when none qualifies."""
    lin = points[points["kind"] == "state"]
    n = lin.groupby(["length", "variant"])[["n_layers", "d_model", "n_heads"]].apply(lambda g: len(g.drop_duplicates()))
    keep = n[n >= STATE_SIZE_MIN_POINTS].index
    if not len(keep):
        return points.iloc[0:0]
    drawn = lin.set_index(["length", "variant"]).index.isin(keep)
    lengths = {L for L, _ in keep}
    tf = points[(points["kind"] == "kv") & points["length"].isin(lengths)]
    return pd.concat([lin[drawn], tf], ignore_index=True)
