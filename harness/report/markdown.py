"""Assemble report.md: sections of tables, figures, claims and provenance, skipping what has no data."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from harness.metrics import x_axis
from harness.model.layout import parse_ratio

from . import claims as C
from . import figures as F
from . import paper as P
from . import tables as T
from .fmt import fmt_delta, fmt_mean_std, fmt_value, md_table
from .load import ok_rows
from .style import metric_unit, sort_layouts, sort_variants

PAPER_NOTE = ("Columns and rows labelled *paper (…)* are the paper's published numbers "
              "(`harness/report/paper_numbers.json`, copied from arXiv 2507.06457), **not ours**. They come "
              "from 340M/1.3B models trained on 20B/100B tokens and evaluated on lm-eval / RULER; our models, "
              "data and tasks are usually far smaller, so compare trends across ratios, not absolute levels.")


def _measured(record: dict, key: str) -> Optional[float]:
    """record[key] when it holds a measured number, else None."""
    v = record.get(key)
    return None if v is None or pd.isna(v) else float(v)


def skip(reason: str) -> str:
    return f"> **Skipped:** {reason}\n"


def _d(d) -> str:
    return "d_model=?" if d is None or (isinstance(d, float) and np.isnan(d)) else f"d_model={int(d)}"


def _scale_title(d, n_scales: int) -> str:
    return f" ({_d(d)})" if n_scales > 1 else ""


def _present(ok: pd.DataFrame) -> str:
    ms = sorted(ok["metric"].unique()) if not ok.empty else []
    return ", ".join(f"`{m}`" for m in ms) if ms else "none"


class Report:
    """Collects sections and figures while walking the table."""

    def __init__(self, df: pd.DataFrame, fig_dir: Path, source: str, regen_cmd: str):
        self.df = df
        self.ok = ok_rows(df)
        self.fig_dir = fig_dir
        self.source = source
        self.regen_cmd = regen_cmd
        self.parts: list[str] = []
        self.n_fig = 0
        self.figures: list[F.FigureRef] = []

    # ------------------------------------------------------------------ helpers
    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def figure(self, ref: F.FigureRef | None) -> bool:
        if ref is None:
            return False
        self.n_fig += 1
        self.figures.append(ref)
        rel = f"{self.fig_dir.name}/{ref.stem}"
        self.add(f"**Figure {self.n_fig}. {ref.title}.** {ref.caption}\n\n"
                 f"![{ref.title}]({rel}.png)\n\n[SVG version]({rel}.svg)\n")
        return True

    # ------------------------------------------------------------------ sections
    def render(self) -> str:
        self.header()
        if self.ok.empty:
            n = len(self.df)
            if n == 0:
                msg = "The results table is empty: there is nothing to tabulate, plot or test."
            else:
                counts = self.df["status"].value_counts().to_dict()
                msg = (f"No successful measurements: all {n} rows have a non-ok status "
                       f"({', '.join(f'{k}: {v}' for k, v in counts.items())}). Nothing to tabulate, plot or test; "
                       "see *Failures* below.")
            self.add("## No data\n\n" + msg + "\n\n" + skip(
                "sections 1–3 (paper tables, figures, claims) need rows with status `ok`."))
        else:
            self.overview()
            self.paper_tables()
            self.figures_section()
            self.claims_section()
        self.failures()
        self.provenance()
        return "\n".join(self.parts)

    def header(self) -> None:
        suite = ", ".join(sorted({s for s in self.df["suite"].dropna()})) or "unknown"
        self.add(f"# Hybrid-attention report: {suite}\n\n"
                 f"Built by `harness report` from `{self.source}` alone: nothing was re-run. Regenerate with "
                 f"`{self.regen_cmd}`.\n\n"
                 "Contents: [Data](#data) · [1. Paper tables](#1-the-papers-tables-re-made-from-our-rows) · "
                 "[2. Figures](#2-figures) · [3. Claims](#3-claims) · [Failures](#failures) · "
                 "[Provenance](#provenance)")

    def overview(self) -> None:
        ok, df = self.ok, self.df
        seeds = sorted({int(s) for s in ok["seed"].dropna()})
        status = df["status"].value_counts()
        lines = [
            "## Data",
            "",
            f"- rows: {len(df)} ({', '.join(f'{k}: {v}' for k, v in status.items())})",
            f"- variants: {', '.join(sort_variants(ok['variant']))}",
            f"- layouts: {', '.join(sort_layouts(ok['layout']))}",
            f"- d_model: {', '.join(str(int(d)) for d in sorted(ok['d_model'].dropna().unique())) or '—'}",
            f"- seq_len: {', '.join(str(int(x)) for x in sorted(ok['seq_len'].dropna().unique())) or '—'}",
            f"- seeds: {', '.join(map(str, seeds)) or '—'}",
            "",
            ("**Uncertainty.** Values are means over seeds. Where more than one seed was run, a value reads "
             "`mean ± std (n=k)`: the sample standard deviation across k seeds (repeats, subtasks and lengths "
             "are first averaged within each seed). Figure error bars show the same std; for single-seed timings "
             "they show half the IQR of repeated timings (`spread`) where recorded."
             if len(seeds) > 1 else
             "**Uncertainty.** Only one seed was run, so no across-seed spread can be shown; timing error bars "
             "(where drawn) are half the IQR of repeated timings (`spread`)."),
            "",
        ]
        by_task = ok.groupby("task")["metric"].agg(lambda s: ", ".join(f"`{m}`" for m in sorted(set(s))))
        counts = ok.groupby("task").size()
        tab = pd.DataFrame({"task": by_task.index, "ok rows": counts.loc[by_task.index].values,
                            "metrics": by_task.values})
        lines.append(md_table(tab))
        self.add("\n".join(lines))

    # ------------------------------------------------------------------ 1. paper tables
    def paper_tables(self) -> None:
        self.add("## 1. The paper's tables, re-made from our rows\n\n" + PAPER_NOTE)
        ok = self.ok
        score = T.accuracy_score(ok)
        self.best_ratio(score)
        self.lm_eval_tasks_table()
        self.lm_by_ratio()
        self.recall_by_ratio()
        self.recall_subtasks(score)
        self.analytic()
        self.crossover()

    def best_ratio(self, score: T.Score | None) -> None:
        self.add("### 1.1 Best ratio per variant (form of Tables 2–3)")
        if score is None:
            self.add(skip("no accuracy rows (`recall_acc`, `lm_eval/*` or `val_loss`) with status ok; "
                          f"metrics present: {_present(self.ok)}."))
            return
        best = T.best_ratio_per_variant(score)
        self.add(f"Score: **{score.metric}** — {score.description}. Per variant, the layout with the "
                 f"{'highest' if score.higher_is_better else 'lowest'} mean over seeds"
                 + (f", among the layouts that learned (above the plateau + {T.NOT_LEARNED_MARGIN:g}; "
                    "see 1.4)." if score.kind == "recall" else "."))
        if score.kind == "lm_eval":
            paper_cols = [("best_ratio_lm_340m", "avg"), ("best_ratio_lm_1.3b", "avg")]
        elif score.kind == "recall":
            paper_cols = [("ruler_subtasks_best", "Avg")]
        else:
            paper_cols = [("best_ratio_lm_340m", None), ("best_ratio_lm_1.3b", None)]
        n_scales = len(T.scales(best))
        for d in T.scales(best):
            bd = T.at_scale(best, d)
            rows = []
            for r in bd.itertuples(index=False):
                row = {"variant": r.variant, "best layout": r.layout if r.learned else "none learned",
                       score.metric: fmt_mean_std(r.mean, r.std, r.n, score.unit),
                       "layouts tried": int(r.n_layouts),
                       "pure": fmt_value(r.pure_mean, score.unit),
                       "best − pure": fmt_delta(r.mean - r.pure_mean, score.unit),
                       "best − Transformer": (fmt_delta(r.mean - r.transformer_mean, score.unit)
                                              if r.variant != "attention" and not np.isnan(r.transformer_mean) else "—")}
                for name, col in paper_cols:
                    src = P.source(name)
                    prow = P.best_ratio_rows(name).get(r.variant)
                    row[f"{src} best"] = prow["layout"] if prow else "—"
                    if col is not None:
                        row[f"{src} {col}"] = fmt_value(prow[col], "accuracy") if prow else "—"
                rows.append(row)
            title = _scale_title(d, n_scales)
            if title:
                self.add(f"**{title.strip(' ()')}**")
            self.add(md_table(pd.DataFrame(rows)))
        if score.kind == "lm":
            self.add("The paper's best ratios are by LM accuracy (a different metric from ours), shown for "
                     "orientation only.")

    def lm_eval_tasks_table(self) -> None:
        score = T.lm_eval_score(self.ok)
        self.add("### 1.2 Zero-shot accuracy per task at the best LM ratio (Tables 2–3)")
        if score is None:
            self.add(skip("no `lm_eval/<task>/<metric>` rows with status ok (the paper's Tables 2–3 are "
                          "zero-shot lm-eval accuracies)."))
            return
        best = T.best_ratio_per_variant(score)
        rows_all = T.lm_eval_tasks(self.ok)
        ps = rows_all.groupby(T.MODEL_KEYS + ["seed", "lm_task"], dropna=False)["value"].mean().reset_index()
        summ = T.across_seeds(ps, T.MODEL_KEYS + ["lm_task"])
        names = P.lm_eval_task_names()
        tasks = sorted(summ["lm_task"].unique(), key=lambda t: (list(names).index(t) if t in names else 99, t))
        papers = ["best_ratio_lm_340m", "best_ratio_lm_1.3b"]
        out = []
        for r in best.itertuples(index=False):
            s = summ[(summ["variant"] == r.variant) & (summ["layout"] == r.layout)
                     & (summ["d_model"].fillna(-1) == (-1 if np.isnan(r.d_model) else r.d_model))]
            row = {"source": f"ours ({_d(r.d_model)})", "variant": r.variant, "layout": r.layout}
            for t in tasks:
                x = s[s["lm_task"] == t]
                row[names.get(t, t)] = fmt_mean_std(x["mean"].iloc[0], x["std"].iloc[0], x["n"].iloc[0],
                                                    "accuracy") if len(x) else "—"
            row["avg"] = fmt_mean_std(r.mean, r.std, r.n, "accuracy")
            out.append(row)
            for name in papers:
                prow = P.best_ratio_rows(name).get(r.variant)
                if prow is None:
                    continue
                prow_out = {"source": P.source(name), "variant": r.variant, "layout": prow["layout"]}
                for t in tasks:
                    prow_out[names.get(t, t)] = fmt_value(prow.get(t), "accuracy") if t in prow else "—"
                prow_out["avg"] = fmt_value(prow["avg"], "accuracy") + ("" if set(tasks) >= set(names) else " (6 tasks)")
                out.append(prow_out)
        self.add(f"Tasks averaged: {', '.join(score.parts)}.\n\n" + md_table(pd.DataFrame(out)))

    def _ratio_table(self, summary: pd.DataFrame, unit: str, paper_name: str | None) -> str:
        mean = T.ratio_by_variant(summary, "mean")
        std = T.ratio_by_variant(summary, "std")
        n = T.ratio_by_variant(summary, "n")
        paper = P.table(paper_name)["values"] if paper_name else {}
        src = P.source(paper_name) if paper_name else ""
        pvars = {v for vals in paper.values() for v in vals}
        learned = (T.ratio_by_variant(summary.assign(learned=summary["learned"].astype(float)), "learned")
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
                    pv = paper.get(lay, {}).get(v)
                    row[f"{v} · {src}"] = fmt_value(pv, "accuracy") if pv is not None else "—"
            if len(linear) > 1:
                vals = mean.loc[lay, linear].dropna()
                row["mean of linear variants"] = fmt_value(vals.mean(), unit) if len(vals) else "—"
                if paper_name:
                    pv = paper.get(lay, {}).get("average")
                    row[f"average · {src}"] = fmt_value(pv, "accuracy") if pv is not None else "—"
            rows.append(row)
        return md_table(pd.DataFrame(rows))

    def lm_by_ratio(self) -> None:
        self.add("### 1.3 LM metric by ratio × variant (Table 4)")
        done = False
        for score, paper_name in ((T.lm_eval_score(self.ok), "lm_avg_by_ratio"), (T.lm_score(self.ok), None)):
            if score is None:
                continue
            s = score.summary()
            self.add(f"**{score.metric}** — {score.description}. Rows sparse → dense.")
            for d in T.scales(s):
                if len(T.scales(s)) > 1:
                    self.add(f"*{_d(d)}*")
                self.add(self._ratio_table(T.at_scale(s, d), score.unit, paper_name))
            done = True
        if not done:
            self.add(skip("no LM-quality rows (`lm_eval/*`, `val_loss`, `val_bpb`, `val_ppl`, `final_loss`) "
                          f"with status ok; metrics present: {_present(self.ok)}."))

    def recall_by_ratio(self) -> None:
        self.add("### 1.4 Recall by ratio × variant (Table 5)")
        score = T.recall_score(self.ok)
        if score is None:
            self.add(skip(f"no `recall_acc` rows with status ok; metrics present: {_present(self.ok)}."))
            return
        s = score.summary()
        self.add(f"**recall_acc** — {score.description}. The paper's column is its 13-task RULER average "
                 "(RetNet and HGRN not reported there; its Transformer value is from the subtask table).")
        self.add(self.recall_levels_note(score))
        for d in T.scales(s):
            if len(T.scales(s)) > 1:
                self.add(f"*{_d(d)}*")
            self.add(self._ratio_table(T.at_scale(s, d), "accuracy", "ruler_avg_by_ratio"))
        bl = T.recall_by_length(self.ok)
        if bl["seq_len"].nunique() > 1:
            self.add("Recall by length (mean over subtasks), one column per seq_len:")
            wide = bl.assign(cell=[fmt_mean_std(m, s_, n, "accuracy") for m, s_, n in zip(bl["mean"], bl["std"], bl["n"])])
            wide["L"] = wide["seq_len"].map(lambda x: f"L={int(x)}" if not np.isnan(x) else "L=?")
            piv = wide.pivot_table(index=T.MODEL_KEYS, columns="L", values="cell", aggfunc="first")
            piv = piv[sorted(piv.columns, key=lambda c: int(c[2:]) if c[2:].isdigit() else 0)]
            piv.columns.name = None
            piv = T.order(piv.reset_index())
            if piv["d_model"].nunique() <= 1:
                piv = piv.drop(columns="d_model")
            self.add(md_table(piv))

    def recall_levels_note(self, score: T.Score) -> str:
        """Chance, plateau and which cells did not learn, said plainly (the table marks them †)."""
        ref = T.recall_reference(self.ok)
        if ref is None:
            return ("*These results carry no chance or plateau rows (recorded before the harness wrote "
                    "them), so learned and unlearned models cannot be told apart here.*")
        lv = ref[None]
        nl = score.not_learned()
        s = score.summary()
        text = (f"Reference levels: uninformed chance {fmt_value(lv['chance'], 'accuracy')}, plateau "
                f"{fmt_value(lv['plateau'], 'accuracy')} (a model that copies some value from the context "
                f"without binding it to its key; for MQAR 1/num_kv_pairs). † marks a model at or below the "
                f"plateau + {T.NOT_LEARNED_MARGIN:g}: **not learned**. Such models are kept out of the best "
                "ratio, the Pareto fronts and the claims' verdicts.")
        if nl.empty:
            return text + " Every model learned."
        names = ", ".join(f"{r.variant} {r.layout}" for r in nl.itertuples(index=False))
        text += f" Not learned ({len(nl)} of {len(s)}): {names}."
        tf = s[s["variant"] == "attention"]
        if len(tf) and not tf["learned"].any():
            text += (" **The Transformer did not learn either: the task was not solved at this budget, so "
                     "every recall comparison in this report rests on unlearned models.** Train longer "
                     "(more `steps`, `early_stop_acc`) or make the task easier before reading these numbers.")
        elif not s["learned"].any():
            text += " **No model learned: every recall comparison here rests on unlearned models.**"
        return text

    def recall_subtasks(self, score: T.Score | None) -> None:
        self.add("### 1.5 Recall subtasks at the best ratio per family (Table 6)")
        rs = T.recall_score(self.ok)
        if rs is None:
            self.add(skip("no `recall_acc` rows with status ok."))
            return
        if not rs.parts:
            self.add(skip("the recall rows have no `subtask` column values."))
            return
        best = T.best_ratio_per_variant(rs)
        sub = T.recall_subtasks_at_best(self.ok, best)
        pt = P.table("ruler_subtasks_best")
        prows = P.best_ratio_rows("ruler_subtasks_best")
        subtasks = rs.parts
        out = []
        for r in best.itertuples(index=False):
            s = sub[(sub["variant"] == r.variant) & (sub["layout"] == r.layout)
                    & (sub["d_model"].fillna(-1) == (-1 if np.isnan(r.d_model) else r.d_model))]
            row = {"source": f"ours ({_d(r.d_model)})", "variant": r.variant, "layout": r.layout}
            for st in subtasks:
                x = s[s["subtask"] == st]
                row[st] = fmt_mean_std(x["mean"].iloc[0], x["std"].iloc[0], x["n"].iloc[0], "accuracy") if len(x) else "—"
            row["avg"] = fmt_mean_std(r.mean, r.std, r.n, "accuracy")
            out.append(row)
            prow = prows.get(r.variant)
            if prow is not None:
                prow_out = {"source": pt["source"], "variant": r.variant, "layout": prow["layout"]}
                for st in subtasks:
                    col = P.ruler_column_for(st)
                    prow_out[st] = f"{fmt_value(prow[col], 'accuracy')} ({col})" if col else "—"
                prow_out["avg"] = fmt_value(prow["Avg"], "accuracy") + " (RULER 13-task)"
                out.append(prow_out)
        self.add("Per variant, recall_acc per subtask (mean over lengths) at the layout with the best mean "
                 "recall. Paper rows map our subtask to its RULER column where one exists (shown in brackets).")
        self.add(md_table(pd.DataFrame(out)))

    def crossover(self) -> None:
        """Where linear layers overtake softmax: measured (harness.report.crossover) next to the paper's L*."""
        from harness.metrics import time_metrics
        from harness.report.crossover import crossover_table, decode_ratio

        self.add("### 1.7 Crossover: where linear mixers overtake softmax attention")
        table = crossover_table(self.ok)
        if table.empty:
            self.add(skip("no measured train_step_s / prefill_s / decode_token_s (or mixer_*) rows of both a "
                          "linear model and the Transformer at the same shape (run the `efficiency` or "
                          "`mixer_efficiency` task)."))
            return
        self.add("Per model, the length at which its time drops below the Transformer's (same d_model, depth, "
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
        self.add(md_table(out[["variant", "layout", "d_model", *metrics, "analytic L*"]].fillna("—")))
        for metric, what in (("decode_token_s", "Per-token decode latency of the whole model"),
                             ("mixer_decode_step_s", "Decode step of one mixer layer")):
            self._decode_ratio(decode_ratio(self.ok, metric=metric), what)

    def _decode_ratio(self, ratio: pd.DataFrame, what: str) -> None:
        if not ratio.empty:
            self.add(f"{what}, Transformer over model, at the longest context measured "
                     "(> 1: the model decodes faster):")
            self.add(md_table(pd.DataFrame({
                "variant": ratio["variant"], "layout": ratio["layout"], "context": ratio["context_len"],
                "model": [fmt_value(v, "s") for v in ratio["value"]],
                "Transformer": [fmt_value(v, "s") for v in ratio["transformer_value"]],
                "softmax / model": [f"{v:.2f}×" for v in ratio["softmax_over_linear"]]})))

    def analytic(self) -> None:
        self.add("### 1.6 Analytic costs (Table 7)")
        ok = self.ok
        fl = T.flops_per_layer_vs_paper(ok, P.flops_formulas())
        costs = T.analytic_costs(ok)
        if fl.empty and costs.empty:
            self.add(skip(f"no analytic rows ({', '.join(T.ANALYTIC_METRICS)}) with status ok."))
            return
        if not fl.empty:
            self.add("Token-mixer FLOPs per token per layer: ours next to the paper's formula (Table 7) evaluated at "
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
            self.add(md_table(pd.DataFrame(rows)))
        if not costs.empty:
            rule = P.table("cache_reduction")
            for d in T.scales(costs):
                cd = T.at_scale(costs, d)
                L = cd["seq_len"].iloc[0]
                self.add(f"Costs per model at L = {int(L) if not np.isnan(L) else '?'} ({_d(d)}). The paper states "
                         f"cache reductions of 'roughly r' to 'r + 1' for r:1 ({rule['source']}).")
                metrics = [m for m in T.ANALYTIC_METRICS if m in cd.columns and m != "mixer_flops_per_token_per_layer"]
                rows = []
                for _, r in cd.iterrows():
                    row = {"variant": r["variant"], "layout": r["layout"]}
                    for m in metrics:
                        row[m] = fmt_value(r[m], metric_unit(m))
                    if "cache_reduction_vs_transformer" in metrics:
                        rr = parse_ratio(r["layout"])
                        row["paper: reduction"] = f"{rr}–{rr + 1}×" if rr else "—"
                    rows.append(row)
                self.add(md_table(pd.DataFrame(rows)))

    # ------------------------------------------------------------------ 2. figures
    def figures_section(self) -> None:
        self.add("## 2. Figures\n\nOne colour per variant throughout; the Transformer is black (dashed where it "
                 "is a reference line). Each figure is also saved as SVG.")
        ok, fd = self.ok, self.fig_dir
        # recall vs ratio
        self.add("### Recall vs ratio")
        rs = T.recall_score(ok)
        if rs is None:
            self.add(skip("no `recall_acc` rows."))
        else:
            bl = T.recall_by_length(ok)
            for d in T.scales(bl):
                sub = T.at_scale(bl, d)
                panel = "seq_len" if sub["seq_len"].nunique() > 1 else None
                ref = T.recall_reference(T.at_scale(ok, d), panel)
                self.figure(F.score_vs_ratio(
                    sub, panel, "recall accuracy [fraction correct]", f"Recall vs ratio{_scale_title(d, len(T.scales(bl)))}",
                    fd, F.slug("recall_vs_ratio", _d(d) if len(T.scales(bl)) > 1 else ""),
                    "Mean recall_acc over subtasks, per length panel; x runs from all-linear to all-attention."
                    + (" Grey lines: the plateau (dash-dot) and uninformed chance (dotted); points at or near "
                       "the plateau did not learn." if ref else ""), reference=ref))
        # LM vs ratio
        self.add("### LM metric vs ratio")
        lm_scores = [s for s in (T.lm_eval_score(ok), T.lm_score(ok)) if s is not None]
        if not lm_scores:
            self.add(skip("no LM-quality rows (`lm_eval/*`, `val_loss`, `val_bpb`, `val_ppl`, `final_loss`)."))
        for sc in lm_scores:
            s = sc.summary()
            for d in T.scales(s):
                multi = len(T.scales(s)) > 1
                arrow = "higher is better" if sc.higher_is_better else "lower is better"
                self.figure(F.score_vs_ratio(
                    T.at_scale(s, d), None, f"{sc.metric} [{sc.unit}] ({arrow})",
                    f"{sc.metric} vs ratio{_scale_title(d, len(T.scales(s)))}", fd,
                    F.slug("lm_vs_ratio", sc.metric, _d(d) if multi else ""), sc.description + "."))
        # FLOPs vs length
        self.add("### FLOPs vs sequence length")
        per_layer = T.summarize(ok, "mixer_flops_per_token_per_layer", T.MODEL_KEYS + ["seq_len"])
        model = T.summarize(ok, "mixer_flops_per_token", T.MODEL_KEYS + ["seq_len"])
        if per_layer.empty and model.empty:
            self.add(skip("no `mixer_flops_per_token(_per_layer)` rows."))
        if not per_layer.empty:
            pl = per_layer[per_layer["layout"].isin(["pure", "transformer"])]
            pl = pl if not pl.empty else per_layer
            for d in T.scales(pl):
                multi = len(T.scales(pl)) > 1
                self.figure(F.flops_per_layer_vs_length(
                    T.at_scale(pl, d), fd, F.slug("flops_per_layer_vs_length", _d(d) if multi else ""),
                    "Analytic forward FLOPs of one token-mixer layer per token (the paper's Fig. 4), log-log; "
                    f"{_d(d)}."))
        if not model.empty:
            for d in T.scales(model):
                multi = len(T.scales(model)) > 1
                self.figure(F.lines_by_layout(
                    T.at_scale(model, d), "seq_len", "mixer_flops_per_token", "FLOP",
                    f"Whole-model token-mixer FLOPs per token vs length{_scale_title(d, len(T.scales(model)))}", fd,
                    F.slug("model_mixer_flops_vs_length", _d(d) if multi else ""),
                    "All token-mixer layers of the model; one panel per layout, Transformer dashed in each."))
        # measured time and memory
        self.add("### Measured time and peak memory vs length")
        self.timing_note()
        any_eff = False
        for metric in ("train_step_s", "prefill_s", "peak_mem_bytes"):
            any_eff |= self._eff_figures(metric, "seq_len [tokens]")
        if not any_eff:
            self.add(skip("no `train_step_s`, `prefill_s` or `peak_mem_bytes` rows."))
        else:
            self.efficiency_table()
        # decode
        self.add("### Decode latency vs context length")
        if not self._eff_figures("decode_token_s", "context length [tokens]"):
            self.add(skip("no `decode_token_s` rows."))
        # one mixer layer
        self.add("### One mixer layer vs length (measured, the twin of the paper's Fig. 4)")
        drew = False
        for metric in T.MIXER_LAYER_METRICS:
            drew |= self._eff_figures(metric, "seq_len [tokens]")
        if not drew:
            self.add(skip("no `mixer_*` rows (run the `mixer_efficiency` task)."))
        self.op_table()
        # cache vs ratio
        self.add("### Cache bytes vs ratio")
        cm = next((m for m in ("cache_bytes", "kv_cache_bytes") if T.has_metric(ok, m)), None)
        if cm is None:
            self.add(skip("no `cache_bytes` or `kv_cache_bytes` rows."))
        else:
            cs = T.summarize(ok[ok["batch"].isna() | (ok["batch"] == ok["batch"].min())], cm, T.MODEL_KEYS + ["seq_len"])
            for d in T.scales(cs):
                multi = len(T.scales(cs)) > 1
                self.figure(F.cache_vs_ratio(
                    T.at_scale(cs, d), cm, fd, F.slug("cache_vs_ratio", _d(d) if multi else ""),
                    f"`{cm}` per layout at up to three lengths ({_d(d)}); log scale where values span decades."))
        # Pareto
        self.add("### Performance–efficiency Pareto front (the paper's Fig. 3)")
        lens = T.pareto_lengths(ok)
        # recall (what the ratio moves) and the LM score (the paper's Fig. 3 axis)
        scores = [s for s in (T.recall_score(ok), T.lm_eval_score(ok) or T.lm_score(ok)) if s is not None]
        if not lens or not scores:
            why = []
            if not lens:
                why.append("no `mixer_flops_per_token` rows")
            if not scores:
                why.append("no accuracy rows")
            self.add(skip(" and ".join(why) + "."))
        else:
            drew = False
            for sc in scores:
                sc_scales = T.scales(sc.per_seed)
                for d in sc_scales:
                    multi = len(sc_scales) > 1
                    sub = T.Score(sc.kind, sc.metric, sc.description, sc.unit, sc.higher_is_better,
                                  T.at_scale(sc.per_seed, d), sc.parts, levels=sc.levels)
                    pts = {L: T.pareto_points(ok, sub, L) for L in lens}
                    nl = sub.not_learned()
                    ref = F.pareto(pts, sub, fd, F.slug("pareto", sc.metric, _d(d) if multi else ""),
                                   f"x = 1 / whole-model token-mixer FLOPs per token at each length (log), y = "
                                   f"{sc.metric} (mean over seeds){'; ' + _d(d) if multi else ''}; colour = variant, "
                                   "marker = layout, outlined points and the grey line form the front.")
                    if self.figure(ref):
                        drew = True
                        front = [f"L={L}: " + ", ".join(f"{r.variant} {r.layout}"
                                                        for r in p[p["on_front"]].itertuples())
                                 for L, p in pts.items() if not p.empty]
                        self.add(f"Front members ({sc.metric}{', ' + _d(d) if multi else ''}): "
                                 + "; ".join(front) + "."
                                 + (f" Left out as not learned: {', '.join(f'{r.variant} {r.layout}' for r in nl.itertuples())}."
                                    if len(nl) else ""))
            if not drew:
                self.add(skip("accuracy and FLOP rows do not share any (variant, layout)."))

    def timing_note(self) -> None:
        """Which clock the times are on, and how many were taken on a loaded machine."""
        clocks = T.timing_clocks(self.ok)
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
        self.add(text)

    def _eff_figures(self, metric: str, xlabel: str) -> bool:
        s = T.efficiency_summary(self.ok, metric)
        if s.empty:
            return False
        x = x_axis(metric)
        unit = self.ok.loc[self.ok["metric"] == metric, "unit"].dropna()
        unit = metric_unit(metric, unit.iloc[0] if len(unit) else None)
        facets = [c for c in T.CONTEXT_KEYS if s[c].nunique() > 1]
        groups = [((), s)] if not facets else list(s.groupby(facets, sort=True))
        for key, sub in groups[:6]:
            key = key if isinstance(key, tuple) else (key,)
            key = tuple(int(k) if isinstance(k, float) and k.is_integer() else k for k in key)
            label = ", ".join(f"{c}={v}" for c, v in zip(facets, key))
            self.figure(F.lines_by_layout(
                sub, x, metric, unit, f"{metric} vs {x}" + (f" ({label})" if label else ""), self.fig_dir,
                F.slug(metric, "vs", x, *[f"{c}-{v}" for c, v in zip(facets, key)]),
                f"Measured `{metric}` per layout panel, one line per variant; "
                + (f"{label}; " if label else "") + "log scales where values span decades.", xlabel=xlabel))
        if len(groups) > 6:
            self.add(f"({len(groups) - 6} further {metric} facets not drawn.)")
        return True

    def op_table(self) -> None:
        """Our op against fla's naive reference and SDPA on the same inputs (mixer_efficiency)."""
        ops = T.op_comparison(self.ok)
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
        self.add("The op alone (`op_*` rows), forward + backward, on the tensors the layer passes to it: our "
                 "chunked op, our step-by-step op, fla's pure-PyTorch reference and SDPA (causal, on the same q, k, "
                 "v; the Transformer's row is its own attention), where each was measured.\n\n" + md_table(pd.DataFrame(out).fillna("—")))

    def efficiency_table(self) -> None:
        rows = {}
        cols = []
        for metric in ("train_step_s", "prefill_s", "decode_token_s", "peak_mem_bytes"):
            vt = T.vs_transformer(self.ok, metric)
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
                rows.setdefault((d, v, lay), {})[col] = f"{fmt_mean_std(r['mean'], r['std'], r['n'], unit)} ({r['ratio']:.2f}× TF)"
        if not rows:
            return
        out = []
        for (d, v, lay), vals in rows.items():
            out.append({"d_model": d, "variant": v, "layout": lay, **{c: vals.get(c, "—") for c in cols}})
        df = T.order(pd.DataFrame(out))
        if df["d_model"].nunique() <= 1:
            df = df.drop(columns="d_model")
        self.add("Measured cost at the longest length with a Transformer baseline; `(k× TF)` = value / Transformer "
                 "value at the same length, width, device and dtype.\n\n" + md_table(df))

    # ------------------------------------------------------------------ 3. claims
    def claims_section(self) -> None:
        self.add("## 3. Claims\n\nEach stated claim is tested against the rows above. Verdicts: **holds** "
                 "(everywhere tested), **partly** (somewhere), **fails** (nowhere), **no data**.")
        for i, c in enumerate(C.all_claims(self.ok), 1):
            self.add(f"### 3.{i} \"{c.title}\" — **{c.verdict}**\n\n{c.summary}")
            if c.details:
                self.add(c.details)

    # ------------------------------------------------------------------ failures & provenance
    def failures(self) -> None:
        self.add("## Failures")
        bad = self.df[self.df["status"] != "ok"]
        if bad.empty:
            self.add("No failed, OOM or diverged rows.")
            return
        counts = bad.groupby(["task", "status"]).size().reset_index(name="rows")
        self.add(md_table(counts))
        cells = bad.drop_duplicates(subset=["cell_id", "task", "status"]) if bad["cell_id"].notna().any() else bad
        show = T.order(cells)[["variant", "layout", "d_model", "seq_len", "task", "status", "error"]].head(30).copy()
        show["error"] = show["error"].fillna("").map(lambda e: (e[:117] + "…") if len(e) > 120 else e)
        for c in ("d_model", "seq_len"):
            show[c] = show[c].map(lambda x: "" if np.isnan(x) else str(int(x)))
        self.add(f"Failed cells ({len(cells)}{', first 30 shown' if len(cells) > 30 else ''}):\n\n" + md_table(show))

    def provenance(self) -> None:
        df = self.df

        def uniq(col: str) -> str:
            vals = sorted({str(v) for v in df[col].dropna() if str(v)}) if col in df.columns else []
            return ", ".join(f"`{v}`" for v in vals) if vals else "—"

        times = df["started_at"].dropna() if "started_at" in df.columns else pd.Series(dtype=object)
        trange = f"{times.min().isoformat()} → {times.max().isoformat()}" if len(times) else "—"
        wall = df["wall_s"].sum() if df["wall_s"].notna().any() else np.nan
        rows = [
            ("suite", uniq("suite")),
            ("results", f"`{self.source}`"),
            ("devices", uniq("device")),
            ("backends", uniq("backend")),
            ("dtypes", uniq("dtype")),
            ("torch", uniq("torch_version")),
            ("harness", uniq("harness_version")),
            ("git sha", uniq("git_sha")),
            ("runs started", trange),
            ("total wall time", fmt_value(wall, "s")),
            ("rows", str(len(df))),
            ("regenerate", f"`{self.regen_cmd}`"),
        ]
        self.add("## Provenance\n\n" + md_table(pd.DataFrame(rows, columns=["field", "value"])))


def render(df: pd.DataFrame, fig_dir: Path, source: str, regen_cmd: str) -> tuple[str, list[F.FigureRef]]:
    rep = Report(df, fig_dir, source, regen_cmd)
    text = rep.render()
    return text, rep.figures
