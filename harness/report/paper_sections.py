"""Part 1 of the report: the paper's tables re-made from our rows (best ratio, zero-shot tasks,
LM and recall by ratio, recall subtasks), the analytic costs and the crossover lengths."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.model.layout import parse_ratio

from . import cost_tables, paper, stats, tables
from .fmt import fmt_delta, fmt_mean_std, fmt_value, md_table
from .sections import PAPER_NOTE, ReportContext, _d, _present, _scale_title, skip
from .style import metric_unit


def paper_tables(ctx: ReportContext) -> None:
    ctx.add("## 1. The paper's tables, re-made from our rows\n\n" + PAPER_NOTE)
    ok = ctx.ok
    score = tables.accuracy_score(ok)
    best_ratio(ctx, score)
    lm_eval_tasks_table(ctx)
    lm_by_ratio(ctx)
    recall_by_ratio(ctx)
    recall_subtasks(ctx, score)
    analytic(ctx)
    crossover(ctx)


def best_ratio(ctx: ReportContext, score: tables.Score | None) -> None:
    ctx.add("### 1.1 Best ratio per variant (form of Tables 2–3)")
    if score is None:
        ctx.add(skip("no accuracy rows (`recall_acc`, `lm_eval/*` or `val_loss`) with status ok; "
                     f"metrics present: {_present(ctx.ok)}."))
        return
    best = tables.best_ratio_per_variant(score)
    ctx.add(f"Score: **{score.metric}** — {score.description}. Per variant, the layout with the "
            f"{'highest' if score.higher_is_better else 'lowest'} mean over seeds"
            + (f", among the layouts that learned (above the plateau + {tables.NOT_LEARNED_MARGIN:g}; "
               "see 1.4)." if score.kind == "recall" else ".")
            + " *Ties with best*: the variant's other layouts whose mean is within the seeds' spread of the "
              "best's (the two stds summed): the best layout is not decided among them."
            + ("" if stats.spread_known(best["std"].dropna().tolist() or [np.nan]) else
               " Only one seed was run: no spread is known, so no tie can be seen."))
    if score.kind == "lm_eval":
        paper_cols = [("best_ratio_lm_340m", "avg"), ("best_ratio_lm_1.3b", "avg")]
    elif score.kind == "recall":
        paper_cols = [("ruler_subtasks_best", "Avg")]
    else:
        paper_cols = [("best_ratio_lm_340m", None), ("best_ratio_lm_1.3b", None)]
    n_scales = len(tables.scales(best))
    for d in tables.scales(best):
        bd = tables.at_scale(best, d)
        rows = []
        for r in bd.itertuples(index=False):
            row = {"variant": r.variant, "best layout": r.layout if r.learned else "none learned",
                   score.metric: fmt_mean_std(r.mean, r.std, r.n, score.unit),
                   "layouts tried": int(r.n_layouts),
                   "ties with best": ", ".join(r.tied) or "—",
                   "pure": fmt_value(r.pure_mean, score.unit),
                   "best − pure": fmt_delta(r.mean - r.pure_mean, score.unit),
                   "best − Transformer": (fmt_delta(r.mean - r.transformer_mean, score.unit)
                                          if r.variant != "attention" and not np.isnan(r.transformer_mean) else "—")}
            for name, col in paper_cols:
                src = paper.source(name)
                prow = paper.best_ratio_rows(name).get(r.variant)
                row[f"{src} best"] = prow["layout"] if prow else "—"
                if col is not None:
                    row[f"{src} {col}"] = fmt_value(prow[col], "accuracy") if prow else "—"
            rows.append(row)
        title = _scale_title(d, n_scales)
        if title:
            ctx.add(f"**{title.strip(' ()')}**")
        ctx.add(md_table(pd.DataFrame(rows)))
    if score.kind == "lm":
        ctx.add("The paper's best ratios are by LM accuracy (a different metric from ours), shown for "
                "orientation only.")


def lm_eval_tasks_table(ctx: ReportContext) -> None:
    score = tables.lm_eval_score(ctx.ok)
    ctx.add("### 1.2 Zero-shot accuracy per task at the best LM ratio (Tables 2–3)")
    if score is None:
        ctx.add(skip("no `lm_eval/<task>/<metric>` rows with status ok (the paper's Tables 2–3 are "
                     "zero-shot lm-eval accuracies)."))
        return
    best = tables.best_ratio_per_variant(score)
    rows_all = tables.lm_eval_tasks(ctx.ok)
    ps = rows_all.groupby(tables.MODEL_KEYS + ["seed", "lm_task"], dropna=False)["value"].mean().reset_index()
    summ = tables.across_seeds(ps, tables.MODEL_KEYS + ["lm_task"])
    names = paper.lm_eval_task_names()
    tasks = sorted(summ["lm_task"].unique(), key=lambda t: (list(names).index(t) if t in names else 99, t))
    papers = ["best_ratio_lm_340m", "best_ratio_lm_1.3b"]
    out = []
    for r in best.itertuples(index=False):
        out.append(_ours_at_best(r, summ, "lm_task", tasks, names))
        for name in papers:
            prow = paper.best_ratio_rows(name).get(r.variant)
            if prow is None:
                continue
            prow_out = {"source": paper.source(name), "variant": r.variant, "layout": prow["layout"]}
            for t in tasks:
                prow_out[names.get(t, t)] = fmt_value(prow.get(t), "accuracy") if t in prow else "—"
            prow_out["avg"] = fmt_value(prow["avg"], "accuracy") + ("" if set(tasks) >= set(names) else " (6 tasks)")
            out.append(prow_out)
    ctx.add(f"Tasks averaged: {', '.join(score.parts)}.\n\n" + md_table(pd.DataFrame(out)))


def _ratio_table(summary: pd.DataFrame, unit: str, paper_name: str | None) -> str:
    mean = tables.ratio_by_variant(summary, "mean")
    std = tables.ratio_by_variant(summary, "std")
    n = tables.ratio_by_variant(summary, "n")
    paper_values = paper.table(paper_name)["values"] if paper_name else {}
    src = paper.source(paper_name) if paper_name else ""
    pvars = {v for vals in paper_values.values() for v in vals}
    learned = (tables.ratio_by_variant(summary.assign(learned=summary["learned"].astype(float)), "learned")
               if "learned" in summary.columns else None)
    linear = [v for v in mean.columns if v != "attention"]
    rows = []
    for lay in mean.index:
        row = {"layout": lay}
        for v in mean.columns:
            row[v] = fmt_mean_std(mean.loc[lay, v], std.loc[lay, v], n.loc[lay, v], unit)
            if learned is not None and learned.loc[lay, v] == 0:
                row[v] += " †"
            if v in pvars:
                pv = paper_values.get(lay, {}).get(v)
                row[f"{v} · {src}"] = fmt_value(pv, "accuracy") if pv is not None else "—"
        if len(linear) > 1:
            vals = mean.loc[lay, linear].dropna()
            row["mean of linear variants"] = fmt_value(vals.mean(), unit) if len(vals) else "—"
            if paper_name:
                pv = paper_values.get(lay, {}).get("average")
                row[f"average · {src}"] = fmt_value(pv, "accuracy") if pv is not None else "—"
        rows.append(row)
    return md_table(pd.DataFrame(rows))


def lm_by_ratio(ctx: ReportContext) -> None:
    ctx.add("### 1.3 LM metric by ratio × variant (Table 4)")
    done = False
    for score, paper_name in ((tables.lm_eval_score(ctx.ok), "lm_avg_by_ratio"), (tables.lm_score(ctx.ok), None)):
        if score is None:
            continue
        s = score.summary()
        ctx.add(f"**{score.metric}** — {score.description}. Rows sparse → dense.")
        for d in tables.scales(s):
            if len(tables.scales(s)) > 1:
                ctx.add(f"*{_d(d)}*")
            ctx.add(_ratio_table(tables.at_scale(s, d), score.unit, paper_name))
        done = True
    if not done:
        ctx.add(skip(f"no LM rows: {tables.NO_LM_ROWS}; metrics present: {_present(ctx.ok)}."))


def recall_by_ratio(ctx: ReportContext) -> None:
    ctx.add("### 1.4 Recall by ratio × variant (Table 5)")
    score = tables.recall_score(ctx.ok)
    if score is None:
        ctx.add(skip(f"no `recall_acc` rows with status ok; metrics present: {_present(ctx.ok)}."))
        return
    s = score.summary()
    ctx.add(f"**recall_acc** — {score.description}. The paper's column is its 13-task RULER average "
            "(RetNet and HGRN not reported there; its Transformer value is from the subtask table).")
    ctx.add(recall_levels_note(ctx, score))
    for d in tables.scales(s):
        if len(tables.scales(s)) > 1:
            ctx.add(f"*{_d(d)}*")
        ctx.add(_ratio_table(tables.at_scale(s, d), "accuracy", "ruler_avg_by_ratio"))
    bl = tables.recall_by_length(ctx.ok)
    if bl["seq_len"].nunique() > 1:
        ctx.add("Recall by length (mean over subtasks), one column per seq_len:")
        wide = bl.assign(cell=[fmt_mean_std(m, s_, n, "accuracy") for m, s_, n in zip(bl["mean"], bl["std"], bl["n"])])
        wide["L"] = wide["seq_len"].map(lambda x: f"L={int(x)}" if not np.isnan(x) else "L=?")
        piv = wide.pivot_table(index=tables.MODEL_KEYS, columns="L", values="cell", aggfunc="first")
        piv = piv[sorted(piv.columns, key=lambda c: int(c[2:]) if c[2:].isdigit() else 0)]
        piv.columns.name = None
        piv = tables.order(piv.reset_index())
        if piv["d_model"].nunique() <= 1:
            piv = piv.drop(columns="d_model")
        ctx.add(md_table(piv))


def recall_levels_note(ctx: ReportContext, score: tables.Score) -> str:
    """Chance, plateau and which cells did not learn, said plainly (the table marks them †)."""
    ref = tables.recall_reference(ctx.ok)
    if ref is None:
        return ("*These results carry no chance or plateau rows (recorded before the harness wrote "
                "them), so learned and unlearned models cannot be told apart here.*")
    lv = ref[None]
    nl = score.not_learned()
    s = score.summary()
    text = (f"Reference levels: uninformed chance {fmt_value(lv['chance'], 'accuracy')}, plateau "
            f"{fmt_value(lv['plateau'], 'accuracy')} (a model that copies some value from the context "
            f"without binding it to its key; for MQAR 1/num_kv_pairs). † marks a model at or below the "
            f"plateau + {tables.NOT_LEARNED_MARGIN:g}: **not learned**. Such models are kept out of the best "
            "ratio, the Pareto fronts and the claims' verdicts.")
    if nl.empty:
        return text + " Every model learned."
    names = ", ".join(f"{r.variant} {r.layout}" for r in nl.itertuples(index=False))
    text += f" Not learned ({len(nl)} of {len(s)}): {names}."
    tf = s[tables.full_transformer(s)]
    if len(tf) and not tf["learned"].any():
        text += (" **The Transformer did not learn either: the task was not solved at this budget, so "
                 "every recall comparison in this report rests on unlearned models.** Train longer "
                 "(more `steps`, `early_stop_acc`) or make the task easier before reading these numbers.")
    elif not s["learned"].any():
        text += " **No model learned: every recall comparison here rests on unlearned models.**"
    return text


def recall_subtasks(ctx: ReportContext, score: tables.Score | None) -> None:
    ctx.add("### 1.5 Recall subtasks at the best ratio per family (Table 6)")
    rs = tables.recall_score(ctx.ok)
    if rs is None:
        ctx.add(skip("no `recall_acc` rows with status ok."))
        return
    if not rs.parts:
        ctx.add(skip("the recall rows have no `subtask` column values."))
        return
    best = tables.best_ratio_per_variant(rs)
    sub = tables.recall_subtasks_at_best(ctx.ok, best)
    pt = paper.table("ruler_subtasks_best")
    prows = paper.best_ratio_rows("ruler_subtasks_best")
    subtasks = rs.parts
    out = []
    for r in best.itertuples(index=False):
        out.append(_ours_at_best(r, sub, "subtask", subtasks))
        prow = prows.get(r.variant)
        if prow is not None:
            prow_out = {"source": pt["source"], "variant": r.variant, "layout": prow["layout"]}
            for st in subtasks:
                col = paper.ruler_column_for(st)
                prow_out[st] = f"{fmt_value(prow[col], 'accuracy')} ({col})" if col else "—"
            prow_out["avg"] = fmt_value(prow["Avg"], "accuracy") + " (RULER 13-task)"
            out.append(prow_out)
    ctx.add("Per variant, recall_acc per subtask (mean over lengths) at the layout with the best mean "
            "recall. Paper rows map our subtask to its RULER column where one exists (shown in brackets).")
    ctx.add(md_table(pd.DataFrame(out)))


def crossover(ctx: ReportContext) -> None:
    """Where linear layers overtake softmax: measured (harness.report.crossover) next to the paper's L*."""
    from harness.metrics import time_metrics
    from harness.report.crossover import crossover_table, decode_ratio

    ctx.add("### 1.7 Crossover: where linear mixers overtake softmax attention")
    table = crossover_table(ctx.ok)
    if table.empty:
        ctx.add(skip("no measured train_step_s / prefill_s / decode_token_s (or mixer_*) rows of both a "
                     "linear model and the Transformer at the same shape (run the `efficiency` or "
                     "`mixer_efficiency` task)."))
        return
    ctx.add("Per model, the length at which its time drops below the Transformer's (same d_model, depth, "
            "batch, device, dtype) and stays below, interpolated in log-log between the two measured lengths "
            "that bracket it (`harness.report.crossover`); the paper's analytic L* (equal per-token mixer FLOPs) "
            "beside it. `≤ L`: faster already at the shortest length measured; `> L`: still slower at the "
            "longest.")

    def when(r) -> str:
        if r.status == "crossed":
            return f"≈{r.crossover_len:,.0f}"
        if r.status == "linear_faster_everywhere":
            return f"≤ {int(r.hi_len):,}"
        return f"> {int(r.lo_len):,}" if not pd.isna(r.lo_len) else "—"

    rows = []
    for (variant, layout, d), g in table.groupby(["variant", "layout", "d_model"], sort=False):
        row = {"variant": variant, "layout": layout, "d_model": int(d)}
        for r in g.itertuples(index=False):
            row[r.metric] = when(r)
        lstar = g["analytic_crossover_len"].iloc[0]
        row["analytic L*"] = f"{lstar:,.0f}" if not pd.isna(lstar) else "—"
        rows.append(row)
    out = pd.DataFrame(rows)
    metrics = [m for m in time_metrics() if m in out.columns]  # whole model, then one layer; L* last
    ctx.add(md_table(out[["variant", "layout", "d_model", *metrics, "analytic L*"]].fillna("—")))
    for metric, what in (("decode_token_s", "Per-token decode latency of the whole model"),
                         ("mixer_decode_step_s", "Decode step of one mixer layer")):
        _decode_ratio(ctx, decode_ratio(ctx.ok, metric=metric), what)


def _decode_ratio(ctx: ReportContext, ratio: pd.DataFrame, what: str) -> None:
    if not ratio.empty:
        ctx.add(f"{what}, Transformer over model, at the longest context measured "
                "(> 1: the model decodes faster):")
        ctx.add(md_table(pd.DataFrame({
            "variant": ratio["variant"], "layout": ratio["layout"], "context": ratio["context_len"],
            "model": [fmt_value(v, "s") for v in ratio["value"]],
            "Transformer": [fmt_value(v, "s") for v in ratio["transformer_value"]],
            "softmax / model": [f"{v:.2f}×" for v in ratio["softmax_over_linear"]]})))


def analytic(ctx: ReportContext) -> None:
    ctx.add("### 1.6 Analytic costs (Table 7)")
    ok = ctx.ok
    fl = cost_tables.flops_per_layer_vs_paper(ok, paper.flops_formulas())
    costs = cost_tables.analytic_costs(ok)
    if fl.empty and costs.empty:
        ctx.add(skip(f"no analytic rows ({', '.join(tables.ANALYTIC_METRICS)}) with status ok."))
        return
    if not fl.empty:
        ctx.add("Token-mixer FLOPs per token per layer: ours next to the paper's formula (Table 7) evaluated at "
                "our d_model and head count H (attention at the longest length L). The formula assumes a "
                "d_head × d_head state per head; a ratio other than 1 means the variant's state has another "
                "shape (e.g. expanded or shrunk keys/values, or a different number of state heads).")
        rows = []
        for r in fl.itertuples(index=False):
            rows.append({"variant": r.variant, "d_model": int(r.d_model) if not np.isnan(r.d_model) else "?",
                         "H": int(r.n_heads) if not np.isnan(r.n_heads) else "—",
                         "L": int(r.seq_len) if not np.isnan(r.seq_len) else "—",
                         "ours": fmt_value(r.ours, "FLOP"),
                         "paper formula": r.paper_formula or "—",
                         "paper formula at our shape": fmt_value(r.paper_value, "FLOP"),
                         "ours / paper": f"{r.ours_over_paper:.3g}" if not np.isnan(r.ours_over_paper) else "—"})
        ctx.add(md_table(pd.DataFrame(rows)))
    if not costs.empty:
        rule = paper.table("cache_reduction")
        for d in tables.scales(costs):
            cd = tables.at_scale(costs, d)
            L = cd["seq_len"].iloc[0]
            ctx.add(f"Costs per model at L = {int(L) if not np.isnan(L) else '?'} ({_d(d)}). The paper states "
                    f"cache reductions of 'roughly r' to 'r + 1' for r:1 ({rule['source']}).")
            metrics = [m for m in tables.ANALYTIC_METRICS if m in cd.columns and m != "mixer_flops_per_token_per_layer"]
            rows = []
            for _, r in cd.iterrows():
                row = {"variant": r["variant"], "layout": r["layout"]}
                for m in metrics:
                    row[m] = fmt_value(r[m], metric_unit(m))
                if "cache_reduction_vs_transformer" in metrics:
                    rr = parse_ratio(r["layout"])
                    row["paper: reduction"] = f"{rr}–{rr + 1}×" if rr else "—"
                rows.append(row)
            ctx.add(md_table(pd.DataFrame(rows)))


def _ours_at_best(r, summary: pd.DataFrame, part_col: str, parts: list[str],
                  names: dict[str, str] | None = None) -> dict[str, str]:
    """Our row of a best-ratio table: one variant (`r`, a row of tables.best_ratio_per_variant) at its
    best layout, `mean ± std (n)` of each part (an lm-eval task or a recall subtask; "—" when not
    measured) under its display name, and the average."""
    s = summary[(summary["variant"] == r.variant) & (summary["layout"] == r.layout)
                & (summary["d_model"].fillna(-1) == (-1 if np.isnan(r.d_model) else r.d_model))]
    row = {"source": f"ours ({_d(r.d_model)})", "variant": r.variant, "layout": r.layout}
    for part in parts:
        x = s[s[part_col] == part]
        row[(names or {}).get(part, part)] = (fmt_mean_std(x["mean"].iloc[0], x["std"].iloc[0], x["n"].iloc[0],
                                                           "accuracy") if len(x) else "—")
    row["avg"] = fmt_mean_std(r.mean, r.std, r.n, "accuracy")
    return row
