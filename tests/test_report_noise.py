"""Verdicts that know noise, LM claims from LM metrics only, and recall against state size
(issue 21, items 2-4): on the committed cpu-recall table and on small synthetic tables (no torch)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report import build_report_from_frame, state_size
from harness.report import claims as C
from harness.report import stats as S
from harness.report import tables as T
from harness.report.normalise import normalize, ok_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cpu_recall():
    df = pd.read_parquet(ROOT / "reports" / "cpu-recall" / "results.parquet")
    return ok_rows(normalize(df))


# --------------------------------------------------------------------------- ties and ranks

def test_tie_rule_and_tied_ranks():
    assert S.is_tie(0.99, 0.01, 0.975, 0.006) and not S.is_tie(0.99, 0.01, 0.97, 0.006)
    assert S.is_tie(0.5, np.nan, 0.51, np.nan, floor=0.02)  # one seed: only the floor
    # a ~ b ~ c but a > c: ranks are still defined, and a tie group of two shares 1.5
    assert list(S.tied_ranks([3.0, 2.0, 1.0], [0.6, 0.5, 0.6])) == [1.5, 2.0, 2.5]
    assert list(S.tied_ranks([5.0, 5.1, 1.0], [0.1, 0.1, 0.1])) == [1.5, 1.5, 3.0]
    r = S.noisy_rank_correlation([4, 3, 2, 1], [0, 0, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0])
    assert r["rho"] == pytest.approx(-1.0) and r["n_decidable"] == 6 and r["n_discordant"] == 6
    r = S.noisy_rank_correlation([4, 3, 2, 1], [1, 1, 1, 1], [1, 2, 3, 4], [0, 0, 0, 0])
    assert r["n_decidable"] == 1  # only 4 vs 1 is ordered beyond a spread of 1 + 1


def test_combine_treats_undecided_as_neither():
    assert C.combine([C.UNDECIDED, C.UNDECIDED, C.NO_DATA]) == C.UNDECIDED
    assert C.combine([C.HOLDS, C.UNDECIDED]) == C.PARTLY
    assert C.combine([C.FAILS, C.UNDECIDED]) == C.FAILS
    assert C.combine([C.HOLDS, C.HOLDS]) == C.HOLDS


# --------------------------------------------------------------------------- the committed cpu-recall table

def test_cpu_recall_ranking_claim_is_not_holds(cpu_recall):
    """Its hybrid scores 0.979-0.995 with seed std up to 0.025: the ranks are ties."""
    claim = C.claim_ranking(cpu_recall)
    assert claim.verdict != "holds"
    assert claim.verdict == C.UNDECIDED
    assert "pairs decidable" in claim.summary and "undecided" in claim.summary


def test_cpu_recall_saturation_is_undecided_where_everything_saturates(cpu_recall):
    claim = C.claim_recall_saturates(cpu_recall)
    rows = {r.split("|")[1].strip(): r.split("|")[-2].strip() for r in claim.details.splitlines()[2:]}
    # pure already ties with the top: a ceiling, not "saturates earlier"
    for v in ("hgrn2", "deltanet", "gated_deltanet"):
        assert rows[v] == C.UNDECIDED
    assert rows["gla"] == C.UNDECIDED  # +0.027 at 1:1 within a spread of 0.036
    assert rows["retnet"] == C.HOLDS and rows["hgrn"] == C.FAILS


def test_cpu_recall_has_no_lm_claim_from_a_recall_loss(cpu_recall):
    assert T.lm_score(cpu_recall) is None
    claim = C.claim_lm_stable(cpu_recall)
    assert claim.verdict == C.NO_DATA and "final_loss" not in claim.details
    assert "no `lm_eval/*` accuracies" in claim.summary
    assert all(s.metric != "final_loss" for s in T.all_scores(cpu_recall))


def test_cpu_recall_report_sections(cpu_recall, tmp_path):
    df = pd.read_parquet(ROOT / "reports" / "cpu-recall" / "results.parquet")
    text = build_report_from_frame(df, tmp_path, source="cpu-recall").read_text()
    table_13 = text.split("### 1.3")[1].split("### 1.4")[0]
    assert "no LM rows" in table_13 and "final_loss —" not in table_13
    claim_33 = text.split("### 3.3")[1].split("### 3.4")[0]
    assert "**no data**" in claim_33.splitlines()[0] and "| final_loss" not in claim_33
    assert re.search(r'### 3\.4 .* — \*\*undecided\*\*', text)
    assert "Pareto front (final_loss)" not in text
    assert "### Recall vs state size" in text and "needs pure models of a variant at ≥ 3 widths" in text


# --------------------------------------------------------------------------- synthetic: noise decides

def _ranking_table(hybrid_std: float, seeds=(0, 1)) -> pd.DataFrame:
    """Four variants, pure and 3:1; pure order gla < hgrn2 < deltanet < gdn, hybrid order reversed."""
    rows = []
    pure = {"gla": 0.60, "hgrn2": 0.70, "deltanet": 0.80, "gated_deltanet": 0.90}
    hyb = {"gla": 0.96, "hgrn2": 0.95, "deltanet": 0.94, "gated_deltanet": 0.93}
    for v, p in pure.items():
        for lay, level in (("pure", p), ("3:1", hyb[v])):
            for i, seed in enumerate(seeds):
                sd = hybrid_std if lay == "3:1" else 0.005
                rows.append({"variant": v, "layout": lay, "d_model": 64, "seed": seed, "task": "mqar",
                             "metric": "recall_acc", "value": level + (sd if i % 2 else -sd) / np.sqrt(2),
                             "unit": "accuracy", "seq_len": 64})
    return ok_rows(normalize(pd.DataFrame(rows)))


def test_ranking_claim_decides_when_separated_and_not_within_noise():
    assert C.claim_ranking(_ranking_table(0.001)).verdict == C.HOLDS  # reversed beyond noise
    noisy = C.claim_ranking(_ranking_table(0.03))  # hybrid differences 0.01 < spread
    assert noisy.verdict == C.UNDECIDED and "0 of 6 pairs decidable" in noisy.summary
    one = C.claim_ranking(_ranking_table(0.001, seeds=(0,)))  # one seed: no spread known
    assert one.verdict == C.PARTLY and "no spread is known" in one.summary


def test_lm_stability_within_noise_is_undecided():
    rows = []
    for lay, base in (("pure", 3.00), ("3:1", 3.10)):  # 3.3 % apart
        for seed, e in ((0, -0.1), (1, 0.1)):
            rows.append({"variant": "gla", "layout": lay, "d_model": 64, "seed": seed, "task": "lm",
                         "metric": "val_loss", "value": base + e, "unit": "nats/token", "seq_len": 256})
    ok = ok_rows(normalize(pd.DataFrame(rows)))
    assert C.claim_lm_stable(ok).verdict == C.UNDECIDED
    sep = ok.assign(value=ok["value"] - ok["seed"].map({0: -0.099, 1: 0.099}))  # seeds agree
    assert C.claim_lm_stable(sep).verdict == C.FAILS
    # the same numbers as a recall task's training loss are no LM rows
    assert C.claim_lm_stable(ok.assign(task="mqar", metric="final_loss")).verdict == C.NO_DATA


# --------------------------------------------------------------------------- recall vs state size

def _state_table(widths) -> pd.DataFrame:
    """Pure gla / deltanet and the Transformer at each width: mqar recall (two seeds, two subtask
    rows) and analytic state / KV bytes (batch 2, so per-sequence bytes are half)."""
    rows = []

    def add(**kw):
        rows.append(dict(d_model=kw.pop("d"), n_heads=2, batch=2, status="ok", **kw))

    for d in widths:
        for v, lay in (("gla", "pure"), ("deltanet", "pure"), ("attention", "transformer")):
            state = 0 if v == "attention" else 2 * 4 * d * d // 2 * (2 if v == "deltanet" else 1)
            for L in (64, 4096):
                add(d=d, variant=v, layout=lay, seed=0, task="analytic", metric="state_bytes", value=state,
                    unit="bytes", seq_len=L)
                add(d=d, variant=v, layout=lay, seed=0, task="analytic", metric="kv_cache_bytes",
                    value=(2 * 4 * 2 * L * d * 4 if v == "attention" else 0), unit="bytes", seq_len=L)
            for seed in (0, 1):
                acc = min(1.0, 0.2 + d / 256 + (0.3 if v != "gla" else 0))
                add(d=d, variant=v, layout=lay, seed=seed, task="mqar", metric="recall_acc", value=acc,
                    unit="accuracy", seq_len=64, context_len=64, subtask="mqar")
    return pd.DataFrame(rows)


def test_recall_vs_state_size_drawn_with_three_widths(tmp_path):
    df = _state_table([32, 64, 128])
    points = state_size.state_size_lines(state_size.recall_vs_state(ok_rows(normalize(df))))
    gla = points[points["variant"] == "gla"].set_index("d_model")
    assert list(gla["bytes"]) == [4 * 32 * 32 / 2, 4 * 64 * 64 / 2, 4 * 128 * 128 / 2]  # per sequence
    tf = points[points["variant"] == "attention"].set_index("d_model")
    assert tf.loc[64, "bytes"] == 2 * 4 * 64 * 64 * 4 and set(tf["kind"]) == {"kv"}  # KV at the recall length
    text = build_report_from_frame(df, tmp_path / "three", source="synthetic").read_text()
    section = text.split("### Recall vs state size")[1].split("###")[0]
    assert "figures/recall-vs-state-size.png" in section
    assert (tmp_path / "three" / "figures" / "recall-vs-state-size.svg").exists()
    assert "| 64 | gla | 128 | 2 | 32 KiB | recurrent state |" in section
    assert "| 64 | attention | 64 | 2 | 128 KiB | KV cache |" in section


def test_recall_vs_state_size_absent_below_three_widths(tmp_path):
    df = _state_table([32, 64])
    assert state_size.state_size_lines(state_size.recall_vs_state(ok_rows(normalize(df)))).empty
    text = build_report_from_frame(df, tmp_path / "two", source="synthetic").read_text()
    section = text.split("### Recall vs state size")[1].split("###")[0]
    assert "recall-vs-state-size" not in section and "**Skipped:**" in section
    assert not (tmp_path / "two" / "figures" / "recall-vs-state-size.png").exists()
    # three widths but no analytic rows: no state bytes, no figure
    no_costs = _state_table([32, 64, 128])
    assert state_size.recall_vs_state(ok_rows(normalize(no_costs[no_costs["task"] != "analytic"]))).empty


def _speed_table(hybrid_s: float, seed_spread: float) -> pd.DataFrame:
    """gla 3:1 and the Transformer timed at one length over two seeds; memory from exact cache rows."""
    rows = []
    for v, lay, t, cache in (("gla", "3:1", hybrid_s, 1e6), ("attention", "transformer", 1.0, 4e6)):
        for seed, e in ((0, -seed_spread), (1, seed_spread)):
            common = {"variant": v, "layout": lay, "d_model": 64, "seed": seed, "seq_len": 1024, "batch": 1,
                      "device": "cpu", "dtype": "float32", "backend": "torch"}
            rows.append({**common, "task": "efficiency", "metric": "train_step_s", "value": t * (1 + e), "unit": "s"})
            rows.append({**common, "task": "analytic", "metric": "cache_bytes", "value": cache, "unit": "bytes"})
    return ok_rows(normalize(pd.DataFrame(rows)))


def test_speed_threshold_within_the_timing_spread_is_undecided():
    # speed-up 1/0.75 = 1.33 vs the 1.30 threshold: decided when the seeds agree, not when they spread 10 %
    assert C.claim_faster_and_smaller(_speed_table(0.75, 0.001)).verdict == C.HOLDS
    noisy = C.claim_faster_and_smaller(_speed_table(0.75, 0.1))
    assert noisy.verdict == C.UNDECIDED and "undecided" in noisy.summary and "≈ (undecided)" in noisy.details
    assert C.claim_faster_and_smaller(_speed_table(1.2, 0.1)).verdict == C.FAILS  # far below: a miss is a miss


def test_other_head_counts_are_other_models_and_drawn_by_heads(tmp_path):
    """Pure models at 1 and 4 heads beside a grid at 2 (cpu-recall-hard's state-size cells): each
    head count is its own model in every table ("pure h=1"; the usual count stays "pure"), and the
    state-size figure draws one line through the three head counts."""
    df = _state_table([64])
    extra = []
    for h in (1, 4):
        for r in df[df["variant"] != "attention"].to_dict("records"):
            scale = 2 / h  # a matrix state shrinks as 1 / heads at a fixed width
            extra.append({**r, "n_heads": h, "value": r["value"] * (scale if r["metric"] == "state_bytes" else 1)})
    df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True)
    norm = normalize(df)
    assert set(norm.loc[norm["n_heads"] == 2, "layout"]) == {"pure", "transformer"}
    assert set(norm.loc[norm["n_heads"] == 1, "layout"]) == {"pure h=1"}
    assert normalize(norm)["layout"].tolist() == norm["layout"].tolist()  # idempotent
    points = state_size.state_size_lines(state_size.recall_vs_state(ok_rows(norm)))
    gla = points[points["variant"] == "gla"].sort_values("n_heads")
    assert gla["n_heads"].tolist() == [1, 2, 4] and gla["bytes"].is_monotonic_decreasing
    gla_scores = T.recall_score(ok_rows(norm)).per_seed.query("variant == 'gla'")
    assert sorted(set(gla_scores["layout"])) == ["pure", "pure h=1", "pure h=4"]  # never averaged together
