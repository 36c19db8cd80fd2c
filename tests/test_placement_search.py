"""The placement search (issue 25, item 3): the greedy choice on hand-made tables (ties, seeds, a
loss), the cells each round builds from the stored table, resume (a rerun trains nothing new),
the suite checks, the report section, and one tiny search through the real sweep engine."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.model.layout import canonical_layout
from harness.placement_search import (
    attention_set,
    greedy_placement,
    measure,
    models_trained,
    policy_layers,
    search_groups,
)
from harness.report.normalise import normalize
from harness.report.search import search_section
from harness.report.sections import ReportContext
from harness.sweep import SuiteError, expand_cells, load_suite
from harness.sweep.search_run import run_search, stored_table
from harness.sweep.store import write_cell
from harness.sweep.validate import validate

SUITE = """\
name: ps
task: mqar
params: {steps: 3, batch_size: 8, n_train: 32, n_test: 8, num_kv_pairs: 2, eval_lengths: [16], eval_every: 1}
model: {n_layers: 4, d_model: 16, n_heads: 2, vocab_size: 32}
axes: {variant: [gla], seq_len: [16], seed: [0, 1]}
placement_search: {attention_layers: 2, metric: recall_acc}
"""


def table(scores: dict[tuple[int, ...], list[float]], n: int = 4, metric: str = "recall_acc",
          steps: dict[tuple[int, ...], list[float]] | None = None, variant: str = "gla") -> pd.DataFrame:
    """Rows of one family: per attention set, one value per seed (seed = position in the list),
    stored under the canonical layout as a sweep stores it."""
    out = []
    for layers, values in scores.items():
        layout, placement = canonical_layout(["A" if i in layers else "L" for i in range(n)])
        for seed, v in enumerate(values):
            base = {"cell_id": f"{layers}-{seed}", "task": "mqar", "variant": variant, "layout": layout,
                    "placement": placement, "n_layers": n, "d_model": 16, "seed": seed, "status": "ok"}
            out.append({**base, "metric": metric, "value": v})
            if steps:
                out.append({**base, "metric": "train_steps", "value": steps[layers][seed]})
    return pd.DataFrame(out)


ROUND1 = {(0,): [0.2, 0.3], (1,): [0.5, 0.5], (2,): [0.9, 0.8], (3,): [0.6, 0.7]}
ROUND2 = {(0, 2): [0.9, 0.9], (1, 2): [0.95, 0.97], (2, 3): [0.99, 1.0]}


def test_greedy_path_keyed_by_attention_layers():
    rounds = greedy_placement(table({**ROUND1, **ROUND2}), "recall_acc", 4, 2)
    assert [r.chosen for r in rounds] == [(2,), (2, 3)]
    assert rounds[1].base == (2,) and rounds[1].candidate_sets() == [(0, 2), (1, 2), (2, 3)]
    assert models_trained(rounds) == 7 * 2
    # "attn:3" at depth 4 is stored as "3:1" (interleave), "attn:0" as "3:1 bottom": one key each
    assert attention_set("3:1", "interleave", 4) == (3,) and attention_set("3:1", "bottom", 4) == (0,)
    assert attention_set("heads:1/2", "interleave", 4) is None
    assert policy_layers(4, 2, "top") == (2, 3) and policy_layers(4, 3, "top") is None


def test_ties_go_to_fewer_steps_then_to_the_lower_index():
    tied = {(0,): [0.5, 0.5], (1,): [0.9, 1.0], (2,): [1.0, 0.9], (3,): [0.9, 0.9]}
    assert greedy_placement(table(tied), "recall_acc", 4, 1)[0].chosen == (1,)  # lower index
    steps = {(0,): [9, 9], (1,): [600, 500], (2,): [300, 400], (3,): [100, 100]}
    assert greedy_placement(table(tied, steps=steps), "recall_acc", 4, 1)[0].chosen == (2,)  # fewer steps


def test_a_loss_is_ranked_lowest_first():
    loss = {(0,): [1.0], (1,): [2.0], (2,): [0.5], (3,): [3.0]}
    assert greedy_placement(table(loss, metric="val_loss"), "val_loss", 4, 1)[0].chosen == (2,)


def test_a_round_waits_for_every_candidate_on_every_seed():
    partial = {**ROUND1, (0, 2): [0.9, 0.9], (1, 2): [0.95]}  # (1, 2) lacks seed 1, (2, 3) is not run
    rounds = greedy_placement(table(partial), "recall_acc", 4, 2)
    assert rounds[0].chosen == (2,) and rounds[1].chosen is None
    assert rounds[1].missing == ((1, 2), (2, 3)) and [c.layers for c in rounds[1].candidates] == [(0, 2)]
    # the seeds asked for: with seed 2 required, round 1 itself is pending
    assert greedy_placement(table(ROUND1), "recall_acc", 4, 2, seeds=[0, 1, 2])[0].chosen is None
    assert measure(table(ROUND1), "recall_acc", (2,), [0, 1]).mean == pytest.approx(0.85)


def _suite(tmp_path: Path, text: str = SUITE):
    path = tmp_path / "ps.yaml"
    path.write_text(text)
    return load_suite(path)


def _fake_rows(cell, value: float) -> list[dict]:
    return [{**cell.identity_columns(), "metric": "recall_acc", "value": value, "unit": "fraction",
             "status": "ok"}]


def _scores_of(cell) -> float:
    at = attention_set(cell.model["layout"], cell.model.get("placement"), cell.model["n_layers"])
    return {**{k: v[0] for k, v in ROUND1.items()}, **{k: v[0] for k, v in ROUND2.items()}}.get(at, 0.1)


def test_round_two_is_built_from_round_one(tmp_path):
    suite = _suite(tmp_path)
    first = expand_cells(suite)
    sets = {attention_set(c.model["layout"], c.model.get("placement"), 4) for c in first}
    # round 1 (every single layer) and the policies at k=1 (coinciding) and k=2 (1:1, four placements)
    assert sets == {(0,), (1,), (2,), (3,), (1, 3), (2, 3), (1, 2), (0, 1)}
    assert len(first) == len(sets) * 2 and {c.seed for c in first} == {0, 1}
    stored = pd.DataFrame([r for c in first for r in _fake_rows(c, _scores_of(c))])
    notes: list[str] = []
    second = expand_cells(suite, notes, stored)
    new = {attention_set(c.model["layout"], c.model.get("placement"), 4) for c in second} - sets
    assert new == {(0, 2)}  # round 2 = {2} + each free index; (1, 2) and (2, 3) are policies' cells too
    assert "gla: round 2 of 2 to run" in notes[-1]


def test_resume_recomputes_the_choices_and_trains_nothing_new(tmp_path):
    suite, results = _suite(tmp_path), tmp_path / "results"
    trained: list[str] = []

    def run(cells):  # a stand-in for the driver: stores a score for every cell not stored
        done = set(stored_table(results)["cell_id"]) if stored_table(results) is not None else set()
        for c in cells:
            if c.cell_id not in done:
                trained.append(c.cell_id)
                write_cell(results, c.cell_id, _fake_rows(c, _scores_of(c)))
        return None

    run_search(suite, results, run, say=lambda _: None)
    assert len(trained) == len(set(trained)) == 9 * 2  # 8 sets of pass 1, then (0, 2)
    rounds = greedy_placement(stored_table(results), "recall_acc", 4, 2)
    assert [r.chosen for r in rounds] == [(2,), (2, 3)]
    trained.clear()
    run_search(suite, results, run, say=lambda _: None)
    assert trained == []


@pytest.mark.parametrize("block, extra, expected", [
    ("{attention_layers: 4}", "", ["placement_search.attention_layers: 4; at depth n_layers=4 a search places 1 to 3"]),
    ("{attention_layers: 0}", "", ["placement_search.attention_layers: 0"]),
    ("{attention_layers: 1, metric: recall_ac}", "", ["unknown metric 'recall_ac'. Did you mean 'recall_acc'"]),
    ("{attention_layers: 1, metric: train_steps}", "", ["the search ranks by the task's score"]),
    ("{attention_layers: 1, compare: [top, sideways]}", "", ["compare[1]: unknown policy 'sideways'"]),
    ("{attention_layers: 1}", "  layout: ['3:1']\n  d_model: [16, 32]\n",
     ["axes.layout: the placement search chooses the layouts itself", "axes.d_model: a placement search varies only"]),
])
def test_the_search_block_is_checked(block, extra, expected):
    text = SUITE.replace("placement_search: {attention_layers: 2, metric: recall_acc}", f"placement_search: {block}")
    raw = __import__("yaml").safe_load(text)
    for line in extra.splitlines():
        key, value = line.strip().split(": ", 1)
        raw["axes"][key] = __import__("yaml").safe_load(value)
    with pytest.raises(SuiteError) as err:
        validate(raw, None)
    for part in expected:
        assert part in str(err.value), str(err.value)


def test_report_section_shows_the_path_the_count_and_the_policies(tmp_path):
    df = normalize(table({**ROUND1, **ROUND2, (0, 1): [0.3, 0.4], (1, 3): [0.99, 0.99]}))
    assert len(search_groups(df)) == 1
    ctx = ReportContext.of(df, tmp_path, "x", "harness report x")
    search_section(ctx)
    text = "\n".join(ctx.parts)
    assert "## Placement search" in text and "found **attn:2,3**" in text
    assert "trained **14 models**" in text  # 7 placements x 2 seeds
    assert "| 2 | attn:2,3 |" in text and "**chosen**" in text
    assert "1:1 bottom" in text and "search better" in text  # (0, 1): far below
    assert "tie (within the seeds' spread)" in text  # (1, 3): 0.99 against 0.995 ± 0.007
    assert "same layers" in text  # 1:1 top is (2, 3)


def test_no_search_section_without_a_complete_first_round(tmp_path):
    ctx = ReportContext.of(normalize(table({(0,): [0.2], (1,): [0.5]})), tmp_path, "x", "x")
    search_section(ctx)
    assert ctx.parts == []


TINY = """\
name: ps-tiny
task: mqar
params: {steps: 2, batch_size: 4, n_train: 16, n_test: 4, num_kv_pairs: 2, eval_lengths: [16], eval_every: 1}
model: {n_layers: 3, d_model: 16, n_heads: 2, vocab_size: 32}
axes: {variant: [gla], seq_len: [16], seed: [0]}
placement_search: {attention_layers: 2}
"""


def test_a_tiny_search_through_the_sweep_engine(tmp_path, monkeypatch):
    """Depth 3, k = 1..2, one seed: 3 + 2 models (round 2 extends round 1's best), the report
    section with its path and count; a rerun trains nothing."""
    from harness.cli import app

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    suite, out = tmp_path / "tiny.yaml", tmp_path / "results"
    suite.write_text(TINY)
    result = CliRunner().invoke(app, ["sweep", str(suite), "--out", str(out), "--executor", "serial"])
    assert result.exit_code == 0, result.output
    # one note per state of the search: the round-1 note of the load is not said again by the
    # search's first pass
    assert result.output.count("gla: round 1 of 2") == 1 and result.output.count("gla: round 2 of 2") == 1, \
        result.output
    stored = pd.read_parquet(out / "results.parquet")
    assert stored["cell_id"].nunique() == 5
    report = (out / "report" / "report.md").read_text()
    assert "## Placement search" in report and "trained **5 models**" in report
    assert "| 2 | attn:" in report
    again = CliRunner().invoke(app, ["sweep", str(suite), "--out", str(out), "--executor", "serial", "--no-report"])
    assert again.exit_code == 0, again.output
    assert pd.read_parquet(out / "results.parquet")["cell_id"].nunique() == 5


def test_the_example_suite_expands_to_round_one_and_the_policies():
    from harness.sweep import find_suite

    cells = expand_cells(load_suite(find_suite("cpu-placement-search")))
    # 2 variants x 2 seeds x (4 single layers + the 4 placements of 1:1); round 2 waits for round 1
    assert len(cells) == 32 and {c.model["variant"] for c in cells} == {"gla", "hgrn"}
