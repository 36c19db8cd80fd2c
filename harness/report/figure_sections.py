"""Part 2 of the report: the figures, the timing clock note, the measured-cost tables and the
op comparison."""
from __future__ import annotations

import pandas as pd

from harness.metrics import x_axis

from . import cost_tables, figures, state_size, stats, tables
from .fmt import fmt_mean_std, fmt_value, md_table
from .sections import ReportContext, _d, _measured, _scale_title, skip
from .style import metric_unit


def _int(x) -> str:
    return "?" if pd.isna(x) else str(int(x))


def figures_section(ctx: ReportContext) -> None:
    ctx.add("## 2. Figures\n\nOne colour per variant throughout; the Transformer is black (dashed where it "
            "is a reference line). Each figure is also saved as SVG.")
    _recall_vs_ratio_figures(ctx)
    recall_vs_state_size(ctx)
    _lm_vs_ratio_figures(ctx)
    _flops_figures(ctx)
    _measured_figures(ctx)
    _cache_figures(ctx)
    _pareto_figures(ctx)


def _recall_vs_ratio_figures(ctx: ReportContext) -> None:
    """Recall vs ratio, one figure per model scale."""
    ok, fd = ctx.ok, ctx.fig_dir
    ctx.add("### Recall vs ratio")
    rs = tables.recall_score(ok)
    if rs is None:
        ctx.add(skip("no `recall_acc` rows."))
    else:
        bl = tables.recall_by_length(ok)
        for d in tables.scales(bl):
            sub = tables.at_scale(bl, d)
            panel = "seq_len" if sub["seq_len"].nunique() > 1 else None
            ref = tables.recall_reference(tables.at_scale(ok, d), panel)
            ctx.figure(figures.score_vs_ratio(
                sub, panel, "recall accuracy [fraction correct]",
                f"Recall vs ratio{_scale_title(d, len(tables.scales(bl)))}", fd,
                figures.slug("recall_vs_ratio", _d(d) if len(tables.scales(bl)) > 1 else ""),
                "Mean recall_acc over subtasks, per length panel; x runs from all-linear to all-attention."
                + (" Grey lines: the plateau (dash-dot) and uninformed chance (dotted); points at or near "
                   "the plateau did not learn." if ref else ""), reference=ref))


def _lm_vs_ratio_figures(ctx: ReportContext) -> None:
    """The LM metrics (lm-eval, the lm task) vs ratio."""
    ok, fd = ctx.ok, ctx.fig_dir
    ctx.add("### LM metric vs ratio")
    lm_scores = [s for s in (tables.lm_eval_score(ok), tables.lm_score(ok)) if s is not None]
    if not lm_scores:
        ctx.add(skip(f"no LM rows: {tables.NO_LM_ROWS}."))
    for sc in lm_scores:
        s = sc.summary()
        for d in tables.scales(s):
            multi = len(tables.scales(s)) > 1
            arrow = "higher is better" if sc.higher_is_better else "lower is better"
            ctx.figure(figures.score_vs_ratio(
                tables.at_scale(s, d), None, f"{sc.metric} [{sc.unit}] ({arrow})",
                f"{sc.metric} vs ratio{_scale_title(d, len(tables.scales(s)))}", fd,
                figures.slug("lm_vs_ratio", sc.metric, _d(d) if multi else ""), sc.description + "."))


def _flops_figures(ctx: ReportContext) -> None:
    """Analytic FLOPs vs length: one layer (Fig. 4) and the whole model."""
    ok, fd = ctx.ok, ctx.fig_dir
    ctx.add("### FLOPs vs sequence length")
    per_layer = tables.summarize(ok, "mixer_flops_per_token_per_layer", tables.MODEL_KEYS + ["seq_len"])
    model = tables.summarize(ok, "mixer_flops_per_token", tables.MODEL_KEYS + ["seq_len"])
    if per_layer.empty and model.empty:
        ctx.add(skip("no `mixer_flops_per_token(_per_layer)` rows."))
    if not per_layer.empty:
        pl = per_layer[per_layer["layout"].isin(["pure", "transformer"])]
        pl = pl if not pl.empty else per_layer
        for d in tables.scales(pl):
            multi = len(tables.scales(pl)) > 1
            ctx.figure(figures.flops_per_layer_vs_length(
                tables.at_scale(pl, d), fd, figures.slug("flops_per_layer_vs_length", _d(d) if multi else ""),
                "Analytic forward FLOPs of one token-mixer layer per token (the paper's Fig. 4), log-log; "
                f"{_d(d)}."))
    if not model.empty:
        for d in tables.scales(model):
            multi = len(tables.scales(model)) > 1
            ctx.figure(figures.lines_by_layout(
                tables.at_scale(model, d), "seq_len", "mixer_flops_per_token", "FLOP",
                f"Whole-model token-mixer FLOPs per token vs length{_scale_title(d, len(tables.scales(model)))}", fd,
                figures.slug("model_mixer_flops_vs_length", _d(d) if multi else ""),
                "All token-mixer layers of the model; one panel per layout, Transformer dashed in each."))


def _measured_figures(ctx: ReportContext) -> None:
    """Measured time, memory and decode latency vs length; one mixer layer."""
    ctx.add("### Measured time and peak memory vs length")
    timing_note(ctx)
    any_eff = False
    for metric in ("train_step_s", "prefill_s", "peak_mem_bytes"):
        any_eff |= _eff_figures(ctx, metric, "seq_len [tokens]")
    if not any_eff:
        ctx.add(skip("no `train_step_s`, `prefill_s` or `peak_mem_bytes` rows."))
    else:
        efficiency_table(ctx)
    # decode
    ctx.add("### Decode latency vs context length")
    if not _eff_figures(ctx, "decode_token_s", "context length [tokens]"):
        ctx.add(skip("no `decode_token_s` rows."))
    # one mixer layer
    ctx.add("### One mixer layer vs length (measured, the twin of the paper's Fig. 4)")
    drew = False
    for metric in cost_tables.MIXER_LAYER_METRICS:
        drew |= _eff_figures(ctx, metric, "seq_len [tokens]")
    if not drew:
        ctx.add(skip("no `mixer_*` rows (run the `mixer_efficiency` task)."))
    op_table(ctx)


def _cache_figures(ctx: ReportContext) -> None:
    """Cache bytes vs ratio."""
    ok, fd = ctx.ok, ctx.fig_dir
    ctx.add("### Cache bytes vs ratio")
    cm = next((m for m in ("cache_bytes", "kv_cache_bytes") if tables.has_metric(ok, m)), None)
    if cm is None:
        ctx.add(skip("no `cache_bytes` or `kv_cache_bytes` rows."))
    else:
        first_batch = ok[ok["batch"].isna() | (ok["batch"] == ok["batch"].min())]
        cs = tables.summarize(first_batch, cm, tables.MODEL_KEYS + ["seq_len"])
        for d in tables.scales(cs):
            multi = len(tables.scales(cs)) > 1
            ctx.figure(figures.cache_vs_ratio(
                tables.at_scale(cs, d), cm, fd, figures.slug("cache_vs_ratio", _d(d) if multi else ""),
                f"`{cm}` per layout at up to three lengths ({_d(d)}); log scale where values span decades."))


def _pareto_figures(ctx: ReportContext) -> None:
    """The performance-efficiency Pareto front (Fig. 3), per score and scale."""
    ok, fd = ctx.ok, ctx.fig_dir
    ctx.add("### Performance–efficiency Pareto front (the paper's Fig. 3)")
    lens = cost_tables.pareto_lengths(ok)
    # recall (what the ratio moves) and the LM score (the paper's Fig. 3 axis)
    scores = [s for s in (tables.recall_score(ok), tables.lm_eval_score(ok) or tables.lm_score(ok)) if s is not None]
    if not lens or not scores:
        why = []
        if not lens:
            why.append("no `mixer_flops_per_token` rows")
        if not scores:
            why.append("no accuracy rows")
        ctx.add(skip(" and ".join(why) + "."))
    else:
        drew = False
        for sc in scores:
            sc_scales = tables.scales(sc.per_seed)
            for d in sc_scales:
                multi = len(sc_scales) > 1
                sub = tables.Score(sc.kind, sc.metric, sc.description, sc.unit, sc.higher_is_better,
                                   tables.at_scale(sc.per_seed, d), sc.parts, levels=sc.levels)
                pts = {L: cost_tables.pareto_points(ok, sub, L) for L in lens}
                nl = sub.not_learned()
                ref = figures.pareto(pts, sub, fd, figures.slug("pareto", sc.metric, _d(d) if multi else ""),
                                     f"x = 1 / whole-model token-mixer FLOPs per token at each length (log), y = "
                                     f"{sc.metric} (mean over seeds){'; ' + _d(d) if multi else ''}; colour = variant, "
                                     "marker = layout, outlined points and the grey line form the front.")
                if ctx.figure(ref):
                    drew = True
                    front = [f"L={L}: " + ", ".join(f"{r.variant} {r.layout}"
                                                    for r in p[p["on_front"]].itertuples())
                             for L, p in pts.items() if not p.empty]
                    ties = [f"L={L}: " + ", ".join(f"{r.variant} {r.layout}"
                                                   for r in p[p["ties_front"]].itertuples())
                            for L, p in pts.items() if not p.empty and p["ties_front"].any()]
                    ctx.add(f"Front members ({sc.metric}{', ' + _d(d) if multi else ''}): "
                            + "; ".join(front) + "."
                            + (" Off the front by their means but within the seeds' spread of it (no "
                               "other model is as cheap and better beyond the two stds summed), so not "
                               "decidably worse: " + "; ".join(ties) + "." if ties else "")
                            + ("" if stats.spread_known(sub.summary()["std"]) else
                               " Some models have one seed: no spread is known for them, so their ties "
                               "with the front cannot be seen.")
                            + (" Left out as not learned: "
                               + ", ".join(f"{r.variant} {r.layout}" for r in nl.itertuples()) + "."
                               if len(nl) else ""))
        if not drew:
            ctx.add(skip("accuracy and FLOP rows do not share any (variant, layout)."))


def recall_vs_state_size(ctx: ReportContext) -> None:
    """Zoology's headline figure and its table, where pure models of a variant were run at
    ≥ 3 widths or head counts with analytic state rows."""
    ctx.add("### Recall vs state size (zoology's headline figure)")
    points = state_size.state_size_lines(state_size.recall_vs_state(ctx.ok))
    if points.empty:
        ctx.add(skip(
            f"needs pure models of a variant at ≥ {state_size.STATE_SIZE_MIN_POINTS} widths (`d_model`) or head counts "
            "(`n_heads`) with `recall_acc` rows and `analytic` rows (`state_bytes`) of the same variant, "
            "d_model and n_heads; the Transformer's `kv_cache_bytes` is the reference. A suite gets it by "
            "sweeping `d_model` (or `n_heads`) over ≥ 3 values for the `mqar` and the `analytic` task "
            "together."))
        return
    ref = tables.recall_reference(ctx.ok.assign(length=ctx.ok["context_len"].fillna(ctx.ok["seq_len"])), "length")
    ctx.figure(figures.recall_vs_state(
        points, ctx.fig_dir, "recall-vs-state-size", "Recall vs state size",
        "x = bytes a model carries per sequence while decoding (log): a pure linear model's recurrent state "
        "(analytic `state_bytes`, independent of the length), the Transformer's KV cache at the recall length "
        "(analytic `kv_cache_bytes`, black dashed); y = mean recall_acc over subtasks and seeds at that length, "
        "error bars one std across seeds; one line per variant through its widths or head counts.",
        reference=ref))
    rows = [{"length": int(r.length), "variant": r.variant, "d_model": _int(r.d_model), "n_heads": _int(r.n_heads),
             "bytes": fmt_value(r.bytes, "bytes"), "what": "recurrent state" if r.kind == "state" else "KV cache",
             "recall_acc": fmt_mean_std(r.mean, r.std, r.n, "accuracy")} for r in points.itertuples(index=False)]
    ctx.add(md_table(pd.DataFrame(rows)))


def timing_note(ctx: ReportContext) -> None:
    """Which clock the times are on, and how many were taken on a loaded machine."""
    clocks = cost_tables.timing_clocks(ctx.ok)
    if not clocks:
        return
    loaded = clocks.pop("loaded")
    names = {"cpu": "CPU time of the measuring process (one thread unless `threads` says otherwise)",
             "wall": "wall-clock time (synchronised on CUDA)"}
    parts = [f"{names.get(k, k)} for {n} row(s)" for k, n in sorted(clocks.items())]
    text = "**Clock.** Timed rows are " + "; ".join(parts) + "; the table keeps both clocks " \
           "(`cpu_time_s`, `wall_time_s`) and `threads` where they were recorded."
    if loaded:
        text += (f" **{loaded} timed row(s) were measured on a loaded machine** (CPU and wall time more than "
                 "20% apart, column `loaded`): rerun them on an idle machine before trusting their wall times.")
    ctx.add(text)


def _eff_figures(ctx: ReportContext, metric: str, xlabel: str) -> bool:
    s = cost_tables.efficiency_summary(ctx.ok, metric)
    if s.empty:
        return False
    x = x_axis(metric)
    unit = ctx.ok.loc[ctx.ok["metric"] == metric, "unit"].dropna()
    unit = metric_unit(metric, unit.iloc[0] if len(unit) else None)
    facets = [c for c in cost_tables.CONTEXT_KEYS if s[c].nunique() > 1]
    groups = [((), s)] if not facets else list(s.groupby(facets, sort=True))
    for key, sub in groups[:6]:
        key = key if isinstance(key, tuple) else (key,)
        key = tuple(int(k) if isinstance(k, float) and k.is_integer() else k for k in key)
        label = ", ".join(f"{c}={v}" for c, v in zip(facets, key))
        ctx.figure(figures.lines_by_layout(
            sub, x, metric, unit, f"{metric} vs {x}" + (f" ({label})" if label else ""), ctx.fig_dir,
            figures.slug(metric, "vs", x, *[f"{c}-{v}" for c, v in zip(facets, key)]),
            f"Measured `{metric}` per layout panel, one line per variant; "
            + (f"{label}; " if label else "") + "log scales where values span decades.", xlabel=xlabel))
    if len(groups) > 6:
        ctx.add(f"({len(groups) - 6} further {metric} facets not drawn.)")
    return True


def op_table(ctx: ReportContext) -> None:
    """Our op against fla's naive reference and SDPA on the same inputs (mixer_efficiency)."""
    ops = cost_tables.op_comparison(ctx.ok)
    if ops.empty:
        return
    impls = [("harness", "ours"), ("recurrent", "ours step by step"), ("fla_naive", "fla naive"),
             ("fla", "fla kernel"), ("sdpa", "SDPA")]
    out = []
    for r in ops.to_dict("records"):
        row = {"variant": r["variant"], "seq_len": int(r["seq_len"])}
        for impl, label in impls:
            if _measured(r, f"op_fwd_bwd_s:{impl}") is not None:
                row[f"{label} fwd+bwd"] = fmt_value(_measured(r, f"op_fwd_bwd_s:{impl}"), "s")
        ours, sd, rec = (_measured(r, f"op_fwd_bwd_s:{i}") for i in ("harness", "sdpa", "recurrent"))
        if ours is not None and rec is not None:
            row["step by step / ours"] = f"{rec / ours:.1f}×"
        if ours is not None and sd is not None:
            row["ours / SDPA time"] = f"{ours / sd:.2f}×"
        pm, ps = _measured(r, "op_fwd_bwd_peak_bytes:harness"), _measured(r, "op_fwd_bwd_peak_bytes:sdpa")
        if pm is not None and ps is not None and ps > 0:
            row["ours / SDPA peak memory"] = f"{pm / ps:.2f}×"
        out.append(row)
    ctx.add("The op alone (`op_*` rows), forward + backward, on the tensors the layer passes to it: our "
            "chunked op, our step-by-step op, fla's pure-PyTorch reference and SDPA (causal, on the same q, k, "
            "v; the Transformer's row is its own attention), where each was measured.\n\n"
            + md_table(pd.DataFrame(out).fillna("—")))


def efficiency_table(ctx: ReportContext) -> None:
    rows = {}
    cols = []
    for metric in ("train_step_s", "prefill_s", "decode_token_s", "peak_mem_bytes"):
        vt = cost_tables.vs_transformer(ctx.ok, metric)
        if vt.empty:
            continue
        x = x_axis(metric)
        L = vt[x].max()
        vt = vt[vt[x] == L]
        col = f"{metric} @ {x}={int(L)}"
        cols.append(col)
        unit = metric_unit(metric)
        for (d, v, lay), g in vt.groupby(["d_model", "variant", "layout"], dropna=False, sort=False):
            r = g.iloc[0]
            cell = f"{fmt_mean_std(r['mean'], r['std'], r['n'], unit)} ({r['ratio']:.2f}× TF)"
            rows.setdefault((d, v, lay), {})[col] = cell
    if not rows:
        return
    out = []
    for (d, v, lay), vals in rows.items():
        out.append({"d_model": d, "variant": v, "layout": lay, **{c: vals.get(c, "—") for c in cols}})
    df = tables.order(pd.DataFrame(out))
    if df["d_model"].nunique() <= 1:
        df = df.drop(columns="d_model")
    ctx.add("Measured cost at the longest length with a Transformer baseline; `(k× TF)` = value / Transformer "
            "value at the same length, width, device and dtype.\n\n" + md_table(df))


