"""Tests for the report generator (harness.report), on synthetic results tables."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report import build_report, build_report_from_frame
from harness.report import claims as C
from harness.report import cost_tables as CT
from harness.report import paper as P
from harness.report import stats as S
from harness.report import tables as T
from harness.report.fmt import fmt_mean_std, md_table
from harness.report.normalise import normalize, ok_rows
from harness.report.style import attn_fraction, set_report_variants, variant_color, variant_label

LINEAR = ["gla", "hgrn2", "deltanet", "gated_deltanet"]
LAYOUTS = ["pure", "6:1", "3:1", "1:1"]
SEQ = [256, 1024, 4096]
SUBTASKS = ["mqar", "niah_single", "niah_multikey"]
BASE = {"gla": 0.30, "hgrn2": 0.45, "deltanet": 0.40, "gated_deltanet": 0.50, "attention": 0.0}


def _layers(layout: str) -> tuple[int, int]:
    if layout == "6:1":
        return 7, 1
    if layout == "pure":
        return 4, 0
    if layout == "transformer":
        return 4, 4
    return 4, int(round(4 * attn_fraction(layout)))


def make_table(seeds=(0, 1), kinds=("analytic", "efficiency", "mixer", "recall", "lm", "lm_eval"),
               faster: bool = True) -> pd.DataFrame:
    """A synthetic long table: variants x layouts x lengths x seeds, every metric kind."""
    rng = np.random.default_rng(0)
    rows = []
    d_model, H = 64, 4

    def add(variant, layout, seed, task, metric, value, unit, seq_len=np.nan, **extra):
        n_layers, n_full = _layers(layout)
        rows.append(dict(
            suite="synthetic", cell_id=f"{variant}-{layout}-{seq_len}-{seed}-{task}", variant=variant,
            layout=layout, n_layers=n_layers, n_full_attn_layers=n_full, d_model=d_model, seq_len=seq_len,
            seed=seed, task=task, metric=metric, value=float(value), unit=unit, status="ok", error=None,
            backend="torch", device="cpu", dtype="float32", torch_version="2.13.0", harness_version="0.1.0",
            git_sha="abc1234", started_at=pd.Timestamp("2025-01-01T00:00:00Z") + pd.Timedelta(seconds=len(rows)),
            wall_s=0.5, n_heads=H, batch=1, **extra))

    models = [(v, l) for v in LINEAR for l in LAYOUTS] + [("attention", "transformer")]
    for v, lay in models:
        n_layers, n_full = _layers(lay)
        f = n_full / n_layers
        n_lin = n_layers - n_full
        for seed in seeds:
            noise = lambda s=0.01: float(rng.normal(0, s))  # noqa: E731
            for L in SEQ:
                if "analytic" in kinds and seed == seeds[0]:
                    per_lin = {"gla": 7, "hgrn2": 7, "deltanet": 8, "gated_deltanet": 8}.get(v, 0) * d_model ** 2 / H
                    per_att = 2 * L * d_model
                    add(v, lay, seed, "analytic", "mixer_flops_per_token_per_layer",
                        per_att if v == "attention" else per_lin, "FLOP", L)
                    add(v, lay, seed, "analytic", "mixer_flops_per_token", n_lin * per_lin + n_full * per_att,
                        "FLOP", L)
                    add(v, lay, seed, "analytic", "model_flops_per_token",
                        n_lin * per_lin + n_full * per_att + n_layers * 24 * d_model ** 2, "FLOP", L)
                    kv = n_full * 2 * L * d_model * 4
                    st = n_lin * H * (d_model // H) ** 2 * 4
                    add(v, lay, seed, "analytic", "state_bytes", st, "bytes", L)
                    add(v, lay, seed, "analytic", "kv_cache_bytes", kv, "bytes", L)
                    add(v, lay, seed, "analytic", "cache_bytes", kv + st, "bytes", L)
                    add(v, lay, seed, "analytic", "cache_reduction_vs_transformer",
                        (4 * 2 * L * d_model * 4) / (kv + st), "x", L)
                    if v != "attention":
                        add(v, lay, seed, "analytic", "analytic_crossover_len", per_lin / (2 * d_model), "tokens", L)
                if "efficiency" in kinds:
                    # fixed overhead + linear part + quadratic part in the attention layers
                    t_tf, mem_tf = 1e-4 * L * (4 + L / 256), 1e6 * (4 + L / 64)
                    t, mem = 1e-4 * L * (4 + f * L / 256), 1e6 * (4 + f * L / 64)
                    if v == "attention":
                        t, mem = t_tf, mem_tf
                    elif not faster:
                        t, mem = 1.1 * t_tf, 0.9 * mem_tf
                    t *= 1 + noise(0.02)
                    add(v, lay, seed, "efficiency", "train_step_s", t, "s", L, spread=0.05 * t, n_repeats=5)
                    add(v, lay, seed, "efficiency", "train_tokens_per_s", L / t, "tokens/s", L)
                    add(v, lay, seed, "efficiency", "prefill_s", t / 3, "s", L, spread=0.02 * t, n_repeats=5)
                    add(v, lay, seed, "efficiency", "peak_mem_bytes", mem, "bytes", L)
                    for ctx in (256, 1024, 4096):
                        if L == SEQ[-1]:
                            add(v, lay, seed, "efficiency", "decode_token_s", 1e-3 * (1 + f * ctx / 512), "s", L,
                                context_len=ctx, spread=1e-5, n_repeats=20)
            if "mixer" in kinds and lay in ("pure", "transformer"):  # one layer and its op
                for L in SEQ:
                    quad = L / 256 if v == "attention" else 0.0
                    t = 1e-5 * L * (3 + quad) * (1 + noise(0.02))
                    add(v, lay, seed, "mixer_efficiency", "mixer_fwd_bwd_s", t, "s", L, spread=0.03 * t, n_repeats=3)
                    add(v, lay, seed, "mixer_efficiency", "mixer_fwd_s", t / 3, "s", L, n_repeats=3)
                    add(v, lay, seed, "mixer_efficiency", "mixer_decode_step_s", 1e-4 * (1 + quad / 4), "s", L)
                    add(v, lay, seed, "mixer_efficiency", "mixer_fwd_bwd_peak_bytes", 1e5 * L * (1 + quad), "bytes", L)
                    for impl in (["sdpa"] if v == "attention" else ["harness", "fla_naive", "sdpa"]):
                        k = {"harness": 0.8, "fla_naive": 2.0, "sdpa": 1.0 + L / 256}[impl]
                        add(v, lay, seed, "mixer_efficiency", "op_fwd_bwd_s", 1e-5 * L * k, "s", L, subtask=impl)
                        add(v, lay, seed, "mixer_efficiency", "op_fwd_bwd_peak_bytes", 1e5 * L * k, "bytes", L,
                            subtask=impl)
            if "recall" in kinds:
                for L in SEQ[:2]:
                    for st in SUBTASKS:
                        sat = min(f / 0.25, 1.0)
                        acc = 0.55 + 0.35 if v == "attention" else BASE[v] + 0.4 * sat
                        add(v, lay, seed, "recall", "recall_acc", np.clip(acc - 0.05 * (L > 256) + noise(), 0, 1),
                            "accuracy", L, subtask=st)
            if "lm" in kinds:
                vl = 3.0 - 0.3 * BASE[v] + noise(0.003)
                add(v, lay, seed, "lm", "val_loss", vl, "nats/token", 256)
                add(v, lay, seed, "lm", "val_ppl", float(np.exp(vl)), "ppl", 256)
                add(v, lay, seed, "lm", "final_loss", vl - 0.05, "nats/token", 256)
            if "lm_eval" in kinds:
                for task, acc in (("arc_easy", 0.40), ("piqa", 0.60)):
                    add(v, lay, seed, "lm_eval", f"lm_eval/{task}/acc", acc + 0.1 * BASE[v] + noise(0.002), "accuracy")
                    add(v, lay, seed, "lm_eval", f"lm_eval/{task}/acc_norm", acc + 0.01, "accuracy")
                    add(v, lay, seed, "lm_eval", f"lm_eval/{task}/acc_stderr", 0.01, "accuracy")
                add(v, lay, seed, "lm_eval", "lm_eval/lambada_openai/perplexity", 80.0, "ppl")
    df = pd.DataFrame(rows)
    if "efficiency" in kinds:  # one failed cell, as the sweep records it
        bad = df.iloc[[0]].copy()
        bad[["cell_id", "task", "metric", "value", "status", "error", "seq_len"]] = [
            "oom-cell", "efficiency", "train_step_s", np.nan, "oom", "CUDA out of memory (synthetic)", 65536]
        df = pd.concat([df, bad], ignore_index=True)
    return df


def _write(df: pd.DataFrame, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    df.to_parquet(d / "results.parquet", index=False)
    return d


def _figure_links(text: str) -> list[str]:
    return re.findall(r"\]\((figures/[^)]+)\)", text)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    base = tmp_path_factory.mktemp("full")
    df = make_table()
    res = _write(df, base / "results")
    path = build_report(res, base / "out")
    return df, path, path.read_text()


# --------------------------------------------------------------------------- full report

def test_report_written_with_all_figures(full):
    _, path, text = full
    assert path.name == "report.md" and path.exists()
    links = _figure_links(text)
    stems = {re.sub(r"\.(png|svg)$", "", l) for l in links}
    for stem in stems:  # every referenced figure exists, in both formats, non-empty
        for ext in (".png", ".svg"):
            f = path.parent / f"{stem}{ext}"
            assert f.exists() and f.stat().st_size > 500, f
    expected = ["recall_vs_ratio", "lm_vs_ratio-lm-eval-avg", "lm_vs_ratio-val-loss", "flops_per_layer_vs_length",
                "model_mixer_flops_vs_length", "train_step_s-vs-seq_len", "peak_mem_bytes-vs-seq_len",
                "decode_token_s-vs-context_len", "cache_vs_ratio", "pareto-recall_acc",
                "mixer_fwd_bwd_s-vs-seq_len", "mixer_decode_step_s-vs-seq_len"]
    for e in expected:
        assert any(e.replace("_", "-") in s.replace("_", "-") for s in stems), (e, sorted(stems))
    # every section has its data except recall vs state size, which needs ≥ 3 widths (one here)
    state_size = text.split("### Recall vs state size")[1].split("###")[0]
    assert "Skipped" not in text.replace(state_size, "") and "Skipped" in state_size
    for heading in ("## 1. The paper's tables", "### 1.1", "### 1.2", "### 1.3", "### 1.4", "### 1.5", "### 1.6",
                    "### 1.7",
                    "## 2. Figures", "## 3. Claims", "## Failures", "## Provenance"):
        assert heading in text
    assert "paper (1.3B)" in text and "paper (340M)" in text
    assert "`abc1234`" in text and "harness report" in text and "`synthetic`" in text
    assert "CUDA out of memory (synthetic)" in text
    assert "± " in text and "(n=2)" in text


def test_default_out_dir_is_beside_the_table(tmp_path, monkeypatch):
    """Reports land beside their table (results/ is untracked), so building one never changes a
    tracked file: not the committed examples under reports/."""
    df = make_table(seeds=(0,), kinds=("lm",))
    res = _write(df, tmp_path / "res")
    monkeypatch.chdir(tmp_path)
    path = build_report(res)
    assert path == res / "report" / "report.md" and path.exists()
    assert "Regenerate with `harness report " + str(res) + "`." in path.read_text()
    assert build_report(res / "results.parquet") == res / "report" / "report.md"
    assert not (tmp_path / "reports").exists()


def test_missing_results_raise_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "nope")


# --------------------------------------------------------------------------- tables vs DataFrame

def test_recall_table_matches_groupby(full):
    df, _, text = full
    ok = ok_rows(normalize(df))
    rec = ok[ok["metric"] == "recall_acc"]
    hand = (rec.groupby(["variant", "layout", "seed"])["value"].mean()
            .groupby(["variant", "layout"]).agg(["mean", "std", "count"]))
    summ = T.recall_score(ok).summary().set_index(["variant", "layout"])
    pd.testing.assert_series_equal(summ["mean"].sort_index(), hand["mean"].sort_index(), check_names=False)
    pd.testing.assert_series_equal(summ["std"].sort_index(), hand["std"].sort_index(), check_names=False)
    assert (summ["n"] == 2).all()
    piv = T.ratio_by_variant(T.recall_score(ok).summary())
    assert list(piv.index) == ["pure", "6:1", "3:1", "1:1", "transformer"]
    assert piv.loc["3:1", "gla"] == pytest.approx(hand.loc[("gla", "3:1"), "mean"])
    # the report's Table 5 cell is that number, formatted
    cell = fmt_mean_std(hand.loc[("gla", "3:1"), "mean"], hand.loc[("gla", "3:1"), "std"], 2, "accuracy")
    sec = text.split("### 1.4")[1].split("### 1.5")[0]
    row = next(l for l in sec.splitlines() if l.startswith("| 3:1 |"))
    assert cell in row


def test_best_ratio_and_lm_eval_average(full):
    df, _, text = full
    ok = ok_rows(normalize(df))
    score = T.recall_score(ok)
    best = T.best_ratio_per_variant(score).set_index("variant")
    means = score.summary().set_index(["variant", "layout"])["mean"]
    for v in LINEAR:
        assert best.loc[v, "mean"] == pytest.approx(means.loc[v].max())
        assert best.loc[v, "layout"] == means.loc[v].idxmax()
    # lm-eval average: acc preferred over acc_norm; stderr and perplexity never averaged
    lm = T.lm_eval_score(ok)
    assert lm.parts == ["arc_easy", "piqa"]
    acc = ok[ok["metric"].isin(["lm_eval/arc_easy/acc", "lm_eval/piqa/acc"])]
    hand = acc.groupby(["variant", "layout", "seed"])["value"].mean().groupby(["variant", "layout"]).mean()
    got = lm.summary().set_index(["variant", "layout"])["mean"]
    pd.testing.assert_series_equal(got.sort_index(), hand.sort_index(), check_names=False)
    # val_loss: lower is better
    vl = T.best_ratio_per_variant(T.val_loss_score(ok)).set_index("variant")
    vmeans = T.val_loss_score(ok).summary().set_index(["variant", "layout"])["mean"]
    assert vl.loc["gla", "layout"] == vmeans.loc["gla"].idxmin()


def test_analytic_table_matches_rows(full):
    df, _, _ = full
    ok = ok_rows(normalize(df))
    costs = CT.analytic_costs(ok).set_index(["variant", "layout"])
    assert (costs["seq_len"] == 4096).all()
    r = ok[(ok["metric"] == "cache_bytes") & (ok["seq_len"] == 4096)].set_index(["variant", "layout"])["value"]
    pd.testing.assert_series_equal(costs["cache_bytes"].sort_index(), r.sort_index(), check_names=False)
    fl = CT.flops_per_layer_vs_paper(ok, P.flops_formulas()).set_index("variant")
    assert fl.loc["gla", "ours_over_paper"] == pytest.approx(1.0)
    assert fl.loc["attention", "ours_over_paper"] == pytest.approx(1.0)


def test_md_table_and_paper_numbers():
    out = md_table(pd.DataFrame({"a": ["x|y", None], "b": [1, 2]}))
    assert out.splitlines()[0] == "| a | b |" and "x\\|y" in out
    assert P.table("ruler_avg_by_ratio")["values"]["3:1"]["gated_deltanet"] == 0.436
    assert P.best_ratio_rows("best_ratio_lm_340m")["hgrn2"]["avg"] == 0.456
    assert P.source("best_ratio_lm_1.3b") == "paper (1.3B)"
    builtin = ["hgrn", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet", "attention"]
    set_report_variants(builtin)
    assert len({variant_color(v) for v in builtin}) == len(builtin)


def test_colours_are_unique_in_a_report_and_labels_are_display_names():
    """Plug-ins without a colour of their own get distinct ones (a name hash once gave two the
    same), never a built-in's; legends say display_name; the Transformer is one label."""
    many = [f"plugin_{i}" for i in range(30)]
    set_report_variants(["gla", "attention", *many])
    colours = [variant_color(v) for v in ["gla", "attention", *many]]
    assert len(set(colours)) == len(colours)
    assert variant_color("gla") == "#1f77b4" and variant_color("attention") == "#000000"  # declared on the class
    assert variant_label("hgrn2") == "HGRN-2" and variant_label("attention") == "Transformer"
    assert variant_label("plugin_3") == "plugin_3"


# --------------------------------------------------------------------------- graceful degradation

def test_analytic_only_skips_with_reasons(tmp_path):
    df = make_table(seeds=(0,), kinds=("analytic",))
    path = build_report(_write(df, tmp_path / "res"), tmp_path / "out")
    text = path.read_text()
    sec = lambda a, b: text.split(a)[1].split(b)[0]  # noqa: E731
    assert "Skipped" in sec("### 1.1", "### 1.3") and "recall_acc" in sec("### 1.1", "### 1.3")
    assert "Skipped" in sec("### 1.3", "### 1.4") and "val_loss" in sec("### 1.3", "### 1.4")
    assert "Skipped" in sec("### 1.4", "### 1.5") and "recall_acc" in sec("### 1.4", "### 1.5")
    assert "Skipped" not in sec("### 1.6", "### 1.7")
    assert "Skipped" in sec("### 1.7", "## 2.") and "efficiency" in sec("### 1.7", "## 2.")
    decode = sec("### Decode latency", "### Cache")
    assert "Skipped" in decode and "decode_token_s" in decode
    assert "no accuracy rows" in sec("### Performance", "## 3.")
    assert text.count("— **no data**") == 3  # claim 1 can still test memory (cache_bytes)
    assert "Not measurable: speed" in sec("### 3.1", "### 3.2") and "— **partly**" in sec("### 3.1", "### 3.2")
    for link in _figure_links(text):
        assert (path.parent / link).stat().st_size > 0
    assert any("flops-per-layer" in l for l in _figure_links(text))


@pytest.mark.parametrize("kind", ["empty", "failed"])
def test_empty_or_failed_only_degrades(tmp_path, kind):
    if kind == "empty":
        df = make_table(seeds=(0,), kinds=("lm",)).iloc[0:0]
    else:
        df = make_table(seeds=(0,), kinds=("lm",))
        df["status"] = "failed"
        df["value"] = np.nan
        df["error"] = "RuntimeError: boom"
    path = build_report(_write(df, tmp_path / "res"), tmp_path / "out")
    text = path.read_text()
    assert "## No data" in text and "Skipped" in text and "## Provenance" in text
    assert ("table is empty" in text) if kind == "empty" else ("No successful measurements" in text and "boom" in text)
    assert _figure_links(text) == []


def test_frame_without_optional_columns(tmp_path):
    df = make_table(seeds=(0,), kinds=("lm",)).drop(columns=["n_heads", "batch"])
    df = df.drop(columns=["started_at", "git_sha"])
    out = build_report_from_frame(df, tmp_path)
    text = out.read_text()
    assert "## 3. Claims" in text and "| git sha | — |" in text


# --------------------------------------------------------------------------- claims

def _verdicts(df) -> dict[str, C.Claim]:
    ok = ok_rows(normalize(df))
    return {c.title.split()[0] + str(i): c for i, c in enumerate(C.all_claims(ok))}


def test_claims_on_constructed_data():
    ok = ok_rows(normalize(make_table(kinds=("efficiency", "recall", "lm", "lm_eval"))))
    fast = C.claim_faster_and_smaller(ok)
    assert fast.verdict == C.PARTLY  # faster & smaller at long lengths only
    assert "3:1: gla, hgrn2, deltanet, gated_deltanet at L=1024,4096" in fast.summary
    assert "Not met at:" in fast.summary and "L=256" in fast.summary
    slow = C.claim_faster_and_smaller(ok_rows(normalize(make_table(kinds=("efficiency",), faster=False))))
    assert slow.verdict == C.FAILS
    # long lengths only -> everywhere
    long_only = ok[(ok["seq_len"] == 4096) & ok["metric"].isin(["train_step_s", "peak_mem_bytes"])]
    long_only = long_only[long_only["layout"] != "1:1"]
    assert C.claim_faster_and_smaller(long_only).verdict == C.HOLDS
    # recall saturates at 3:1 by construction, LM is flat, rank order is the same pure vs hybrid
    assert C.claim_recall_saturates(ok).verdict == C.HOLDS
    assert C.claim_lm_stable(ok).verdict == C.HOLDS
    assert C.claim_ranking(ok).verdict == C.FAILS
    # recall still rising past 3:1 -> fails
    rising = ok.copy()
    m = (rising["metric"] == "recall_acc") & (rising["layout"] == "1:1")
    rising.loc[m, "value"] += 0.2
    assert C.claim_recall_saturates(rising).verdict == C.FAILS
    # hybrid ranking reversed vs pure -> holds
    rev = ok[ok["metric"] == "recall_acc"].copy()
    hyb = rev["layout"].isin(["6:1", "3:1", "1:1"])
    rev.loc[hyb, "value"] = 1.5 - rev.loc[hyb, "variant"].map(BASE) * 2
    assert C.claim_ranking(rev).verdict == C.HOLDS
    # no data
    empty = ok.iloc[0:0]
    assert {c.verdict for c in C.all_claims(empty)} == {C.NO_DATA}


def test_rank_statistics():
    assert S.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert S.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert S.kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert S.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_report_package_does_not_import_torch(tmp_path):
    """Building a whole report (every kind of row, crossover and analytic L* included) from a
    results directory runs in a process that never imports torch."""
    code = ("import sys; from pathlib import Path; from harness.report import build_report; "
            "from tests.test_report import make_table, _write; "
            f"build_report(_write(make_table(), Path(r'{tmp_path}/res')), r'{tmp_path}/out'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "analytic L*" in (tmp_path / "out" / "report.md").read_text()


def test_crossover_section_matches_the_crossover_functions(full):
    from harness.report.crossover import crossover_table, decode_ratio

    df, _, text = full
    section = text.split("### 1.7")[1].split("## 2.")[0]
    table = crossover_table(df[df.status == "ok"])
    assert not table.empty
    for r in table.itertuples(index=False):
        assert f"| {r.variant} | {r.layout} |" in section
        if r.status == "crossed":
            assert f"≈{r.crossover_len:,.0f}" in section
    for r in decode_ratio(df[df.status == "ok"]).itertuples(index=False):
        assert f"{r.softmax_over_linear:.2f}×" in section


def _with_levels(df: pd.DataFrame, plateau: float, chance: float = 0.03) -> pd.DataFrame:
    """The recall task's companion rows (recall_chance, recall_plateau) beside every recall row."""
    rec = df[df["metric"] == "recall_acc"]
    extra = [rec.assign(metric=m, value=v, cell_id=rec["cell_id"] + m)
             for m, v in (("recall_chance", chance), ("recall_plateau", plateau))]
    return pd.concat([df, *extra], ignore_index=True)


def test_models_at_the_plateau_are_not_learned_and_left_out(tmp_path):
    df = _with_levels(make_table(kinds=("analytic", "recall")), plateau=0.5)
    ok = ok_rows(normalize(df))
    score = T.recall_score(ok)
    s = score.summary().set_index(["variant", "layout"])
    assert (s["plateau"] == 0.5).all() and (s["chance"] == 0.03).all()
    assert (s["learned"] == (s["mean"] > 0.5 + T.NOT_LEARNED_MARGIN)).all()
    assert not s.loc[("gla", "pure"), "learned"] and s.loc[("gated_deltanet", "1:1"), "learned"]
    # best ratio: only learned layouts compete
    best = T.best_ratio_per_variant(score).set_index("variant")
    for v, r in best.iterrows():
        assert s.loc[(v, r["layout"]), "learned"]
    # a variant with nothing learned keeps a row, marked
    high = T.recall_score(ok_rows(normalize(_with_levels(make_table(kinds=("recall",)), plateau=0.86))))
    hb = T.best_ratio_per_variant(high).set_index("variant")
    assert not hb.loc["gla", "learned"] and hb.loc["gla", "layout"] is None
    # Pareto points: learned models only
    pts = CT.pareto_points(ok, score, 4096)
    assert len(pts) == int(s["learned"].sum()) and pts["mean"].gt(0.55).all()
    # the ranking claim compares learned models only: every pure model is unlearned here
    assert C.claim_ranking(ok).verdict == C.NO_DATA
    # the report marks them and says the Transformer did not learn when it did not
    text = build_report(_write(df, tmp_path / "a"), tmp_path / "ra").read_text()
    assert "†" in text and "**not learned**" in text and "gla pure" in text
    assert "The Transformer did not learn" not in text
    df_tf = _with_levels(make_table(kinds=("analytic", "recall")), plateau=0.95)
    text = build_report(_write(df_tf, tmp_path / "b"), tmp_path / "rb").read_text()
    assert "The Transformer did not learn either" in text and "none learned" in text


def test_recall_saturation_needs_a_learned_3_to_1():
    df = _with_levels(make_table(kinds=("recall",)), plateau=0.5)
    ok = ok_rows(normalize(df))
    claim = C.claim_recall_saturates(ok)
    # at 3:1 every variant scores BASE + 0.4 - 0.025 > 0.55, so each has a verdict
    assert claim.verdict == C.HOLDS
    ok3 = ok.copy()
    m = (ok3["metric"] == "recall_acc") & (ok3["layout"] == "3:1") & (ok3["variant"] == "gla")
    ok3.loc[m, "value"] = 0.5
    claim = C.claim_recall_saturates(ok3)
    assert "3:1 not learned" in claim.details


def test_timing_note_names_the_clock_and_counts_loaded_rows(tmp_path):
    df = make_table(seeds=(0,), kinds=("efficiency",))
    timed = df["metric"].isin(CT.TIMED_METRICS)
    assert timed.sum() >= 4
    assert CT.timing_clocks(df) == {"wall": int(timed.sum()), "loaded": 0}  # a table from before the column
    df["clock"] = pd.Series(pd.NA, index=df.index, dtype="string")
    df.loc[timed, "clock"] = "cpu"
    df["loaded"] = pd.Series(pd.NA, index=df.index, dtype="boolean")
    df.loc[timed, "loaded"] = False
    df.loc[df.index[timed][:3], "loaded"] = True
    assert CT.timing_clocks(df) == {"cpu": int(timed.sum()), "loaded": 3}
    text = build_report_from_frame(df, tmp_path).read_text()
    assert re.search(r"Timed rows are CPU time of the measuring process \(one thread unless `threads` says "
                     r"otherwise\) for \d+ row\(s\);", text)
    assert "**3 timed row(s) were measured on a loaded machine**" in text
