"""The metric catalogue (harness.metrics) is the one place metric facts live: the docs
agree with it, lm-eval's directions agree with lm-eval's registry, and a task cannot write a
metric it does not have."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import metrics as M
from harness.sweep.run_cell import _check_task_rows

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def documented() -> dict[str, str]:
    """metric -> unit from the rows of docs/metrics.md's metric tables (header `| metric | unit |`)."""
    out: dict[str, str] = {}
    in_metric_table = False
    for line in DOCS.read_text().splitlines():
        if not line.startswith("|"):
            in_metric_table = False
            continue
        if re.match(r"^\|\s*metric\s*\|\s*unit\s*\|", line):
            in_metric_table = True
            continue
        m = re.match(r"^\|\s*((?:`[^`]+`(?:,\s*)?)+)\s*\|\s*([^|]+?)\s*\|", line)
        if m and in_metric_table:
            for name in re.findall(r"`([^`]+)`", m.group(1)):
                out[name] = m.group(2)
    return out


def test_docs_list_every_metric_with_the_catalogue_unit():
    docs = documented()
    missing = [n for n in M.BUILTIN if n not in docs]
    assert not missing, f"docs/metrics.md does not list {missing}"
    wrong = {n: (u, M.get_metric(n).unit) for n, u in docs.items()
             if M.lookup(n) and "<" not in n and u != M.get_metric(n).unit}
    assert not wrong, f"docs/metrics.md units disagree with the catalogue (docs, catalogue): {wrong}"
    unknown = [n for n in docs if M.lookup(n) is None and not n.startswith(M.LM_EVAL_PREFIX)]
    assert not unknown, f"docs/metrics.md documents metrics the catalogue does not have: {unknown}"


def test_lm_eval_directions_are_lm_evals_own():
    registry = pytest.importorskip("lm_eval.api.registry")
    for name, (_, better) in M.LM_EVAL_METRICS.items():
        if name == "score":  # RULER's per-length scores: not a registered lm-eval metric
            continue
        assert registry.is_higher_better(name) is better, name


def test_lm_eval_rows_are_a_family():
    acc = M.get_metric("lm_eval/arc_easy/acc_norm")
    assert (acc.unit, acc.higher_is_better) == ("score", True)
    ppl = M.get_metric("lm_eval/wikitext/word_perplexity/none")
    assert (ppl.unit, ppl.higher_is_better) == ("ppl", False)
    odd = M.get_metric("lm_eval/mytask/my_custom")
    assert odd.higher_is_better is None  # reported, never averaged or ranked


def test_a_task_row_must_be_catalogued_and_in_its_unit():
    with pytest.raises(KeyError, match="not in the catalogue.*register_metric"):
        _check_task_rows([{"metric": "no_such_metric", "value": 1.0}])
    with pytest.raises(ValueError, match="has unit 's' in the catalogue"):
        _check_task_rows([{"metric": "train_step_s", "value": 1.0, "unit": "ms"}])
    (row,) = _check_task_rows([{"metric": "train_step_s", "value": 1.0}])
    assert row["unit"] == "s"  # filled in from the catalogue


def test_register_metric_refuses_a_conflicting_definition():
    same = M.get_metric("recall_acc")
    assert M.register_metric(same) is same
    with pytest.raises(ValueError, match="already catalogued differently"):
        M.register_metric(M.Metric("recall_acc", "percent", "recall", True, "accuracy", ("mqar",), "x"))


def test_directions_and_axes():
    assert M.higher_is_better("recall_acc") is True and M.higher_is_better("val_loss") is False
    assert M.higher_is_better("recall_plateau") is None
    assert M.x_axis("decode_token_s") == "context_len" and M.x_axis("prefill_s") == "seq_len"
    assert M.time_metrics()[:3] == ["train_step_s", "prefill_s", "decode_token_s"]


def test_every_builtin_analytic_row_is_catalogued():
    from harness.model.config import ModelConfig
    from harness.model.costs import model_costs

    for layout in ("pure", "1:1", "transformer"):
        rows = model_costs(ModelConfig(variant="gla", layout=layout, n_layers=2, d_model=32, n_heads=2), 128)
        assert _check_task_rows(rows)
        assert ("analytic_crossover_len" in {r["metric"] for r in rows}) == (layout != "transformer")
