"""The committed cpu-recall-hard example separates the architectures (issue 21's outcome bounds),
read from its table: the Transformer solves the task on every seed, the pure paper variants spread
(at least two below 0.6, at least one above 0.9), the depth holds four attention fractions below
the Transformer's, and seeds agree where both learned."""
from pathlib import Path

import pandas as pd
import pytest

from harness.report.normalise import normalize, ok_rows
from harness.report.state_size import recall_vs_state, state_size_lines
from harness.report.style import attn_fraction
from harness.report.tables import NOT_LEARNED_MARGIN

TABLE = Path(__file__).resolve().parents[1] / "reports" / "cpu-recall-hard" / "results.parquet"
PAPER_VARIANTS = ["hgrn", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet"]


@pytest.fixture(scope="module")
def recall() -> pd.DataFrame:
    """recall_acc at the training length (128 tokens), 2 heads (the main grid), with its plateau."""
    t = pd.read_parquet(TABLE)
    t = t[(t["task"] == "mqar") & (t["context_len"] == 128) & (t["n_heads"] == 2)]
    acc = t[t["metric"] == "recall_acc"].set_index("cell_id")
    plateau = t[t["metric"] == "recall_plateau"].set_index("cell_id")["value"]
    assert (t["status"] == "ok").all()
    return acc.assign(plateau=plateau)[["variant", "layout", "seed", "value", "plateau"]]


def test_the_transformer_solves_it_on_every_seed(recall):
    tf = recall[recall["layout"] == "transformer"]
    assert len(tf) >= 2 and (tf["value"] >= 0.9).all(), tf


def test_the_pure_paper_variants_spread_out(recall):
    pure = recall[(recall["layout"] == "pure") & recall["variant"].isin(PAPER_VARIANTS)]
    means = pure.groupby("variant")["value"].mean()
    assert set(means.index) == set(PAPER_VARIANTS)
    assert (means < 0.6).sum() >= 2, means
    assert (means > 0.9).sum() >= 1, means


def test_four_attention_fractions_below_the_transformer(recall):
    fractions = recall.groupby("variant")["layout"].apply(lambda s: {attn_fraction(x) for x in s} - {1.0})
    assert fractions.map(len).max() >= 4, fractions


def test_seeds_agree_where_both_learned(recall):
    learned = recall[recall["value"] > recall["plateau"] + NOT_LEARNED_MARGIN]
    both = learned.groupby(["variant", "layout"])["value"].agg(["std", "count"])
    both = both[both["count"] >= 2]
    # at least the Transformer and one linear model learned on both seeds (not vacuous); cells
    # where one seed learned and the other did not (GLA 1:1 and LAAA, RetNet pure in the compiled
    # run) are the report's undecided ones, not a disagreement between learned values
    assert len(both) >= 2 and (both["std"] <= 0.1).all(), both
    assert recall.groupby(["variant", "layout"])["seed"].nunique().min() >= 2


def test_the_report_draws_recall_against_state_size():
    """Zoology's headline figure (issue 21 item 2) is in the committed report: pure models of at
    least three variants at three head counts, at their analytic state bytes, from this table."""
    points = state_size_lines(recall_vs_state(ok_rows(normalize(pd.read_parquet(TABLE)))))
    lines = points[(points["kind"] == "state") & (points["length"] == 128)].groupby("variant")["n_heads"].nunique()
    assert (lines >= 3).sum() >= 3, lines
    report = (TABLE.parent / "report.md").read_text()
    section = report.split("### Recall vs state size")[1].split("\n### ")[0]
    assert "figures/recall-vs-state-size.png" in section
