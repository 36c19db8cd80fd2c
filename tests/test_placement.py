"""Placement of a ratio layout's attention layers: the patterns each placement gives, their
canonical identity (specs that give the same layers are one cell, and the default placement
renames no cell stored before placement existed), and clear errors."""
import textwrap

import pandas as pd
import pytest

from harness.model.config import ModelConfig
from harness.model.layout import PLACEMENTS, LayoutError, canonical_layout, resolve_layout
from harness.model.resolve import resolve_model
from harness.sweep.expand import expand_cells
from harness.sweep.messages import SuiteError
from harness.sweep.reading import load_suite


@pytest.mark.parametrize("layout, n, placement, pattern", [
    ("3:1", 8, "interleave", "LLLALLLA"),
    ("3:1", 8, "bottom", "AALLLLLL"),
    ("3:1", 8, "top", "LLLLLLAA"),
    ("3:1", 8, "middle", "LLLAALLL"),
    ("3:1", 8, "ends", "ALLLLLLA"),
    ("2:1", 9, "ends", "AALLLLLLA"),  # odd count: the extra layer at the bottom
    ("3:1", 4, "middle", "LALL"),
    ("5:1", 12, "middle", "LLLLLAALLLLL"),
])
def test_placements(layout, n, placement, pattern):
    assert "".join(resolve_layout(layout, n, placement)) == pattern


def test_canonical_form_is_the_first_placement_that_gives_the_layers():
    for n, r in [(4, 3), (8, 3), (8, 1), (12, 2), (12, 5), (25, 24)]:
        for placement in PLACEMENTS:
            kinds = resolve_layout(f"{r}:1", n, placement)
            name, canon = canonical_layout(kinds)
            assert name == f"{r}:1"
            assert resolve_layout(name, n, canon) == kinds
            first = next(p for p in PLACEMENTS if resolve_layout(f"{r}:1", n, p) == kinds)
            assert canon == first
    assert canonical_layout(list("LLAL")) == ("3:1", "attn:2")  # no named placement gives it
    assert canonical_layout(list("LLALA")) == ("LLALA", "interleave")  # 2 of 5: no ratio
    assert canonical_layout(list("LLLL")) == ("pure", "interleave")


def test_explicit_indices_as_a_placement():
    assert "".join(resolve_layout("3:1", 4, "attn:2")) == "LLAL"
    assert "".join(resolve_layout("3:1", 8, "attn:1,6")) == "LALLLLAL"
    assert canonical_layout(resolve_layout("3:1", 8, "attn:0,1")) == ("3:1", "bottom")  # a named one wins
    with pytest.raises(LayoutError, match="needs 2 distinct indices"):
        resolve_layout("3:1", 8, "attn:2")
    with pytest.raises(LayoutError, match="needs 1 distinct indices in 0..3"):
        resolve_layout("3:1", 4, "attn:4")


def test_explicit_patterns_and_indices_take_no_placement():
    with pytest.raises(LayoutError, match="applies to ratio layouts"):
        resolve_layout("LLAL", 4, "bottom")
    with pytest.raises(LayoutError, match="unknown placement 'sideways'.*'attn:2'"):
        resolve_layout("3:1", 4, "sideways")
    # pure / transformer have nothing to place: any placement is the same model
    assert resolve_model({"layout": "pure", "placement": "top", "n_layers": 4}) == resolve_model({"layout": "pure"})


def test_resolve_model_canonicalises_and_omits_the_default():
    base = {"variant": "gla", "n_layers": 8, "d_model": 32, "n_heads": 2}
    default = resolve_model({**base, "layout": "3:1"})
    assert "placement" not in default and "block" not in default  # the id of every pre-placement cell
    assert resolve_model({**base, "layout": "3:1", "placement": "interleave"}) == default
    assert resolve_model({**base, "layout": "LLLALLLA"}) == default
    bottom = resolve_model({**base, "layout": "3:1", "placement": "bottom"})
    assert (bottom["layout"], bottom["placement"]) == ("3:1", "bottom")
    assert resolve_model({**base, "layout": "attn:0,1"}) == bottom
    assert resolve_model({**base, "layout": "AALLLLLL"}) == bottom
    # at depth 4 one block: "top" is the paper's interleave, "ends" of one layer is "bottom"
    four = {**base, "n_layers": 4}
    assert resolve_model({**four, "layout": "3:1", "placement": "top"}) == resolve_model({**four, "layout": "3:1"})
    assert resolve_model({**four, "layout": "3:1", "placement": "ends"})["placement"] == "bottom"
    assert ModelConfig.from_dict(bottom).placement == "bottom"


def _suite(tmp_path, axes: str, n_layers: int = 8):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: placement-test
        task: analytic
        model: {{n_layers: {n_layers}, d_model: 32, n_heads: 2}}
        axes: {{variant: [gla], seq_len: [64], {axes}}}
        """))
    return path


def test_a_suite_merges_placements_that_give_the_same_layers(tmp_path):
    cells = expand_cells(load_suite(_suite(tmp_path, "layout: ['3:1', pure], placement: [interleave, top, ends]",
                                           n_layers=4)))
    # 3:1 at depth 4: interleave == top; ends == bottom; pure: one cell whatever the placement
    got = sorted((c.model["layout"], c.model.get("placement", "interleave")) for c in cells)
    assert got == [("3:1", "bottom"), ("3:1", "interleave"), ("pure", "interleave")]
    rows = {c.model.get("placement", "interleave"): c.identity_columns()["placement"] for c in cells}
    assert rows["bottom"] == "bottom" and rows["interleave"] == "interleave"


def test_a_suite_names_a_bad_placement(tmp_path):
    with pytest.raises(SuiteError, match="axes.placement"):
        load_suite(_suite(tmp_path, "layout: ['3:1'], placement: [sideways]"))
    with pytest.raises(SuiteError, match="applies to ratio layouts"):
        expand_cells(load_suite(_suite(tmp_path, "layout: [LLLALLLA], placement: [bottom]")))


def test_the_report_tables_recall_and_steps_by_placement_and_keeps_recall_loss_out_of_lm(tmp_path):
    from harness.report import build_report_from_frame

    rows = []
    recall = {"bottom": (0.26, 1400), "interleave": (0.99, 350)}  # placement: (recall_acc, train_steps)
    for placement, (acc, steps) in recall.items():
        for seed in (0, 1):
            base = {"suite": "p", "variant": "gla", "layout": "3:1", "placement": placement, "n_layers": 4,
                    "n_full_attn_layers": 1, "d_model": 64, "status": "ok", "batch": 1, "seq_len": 64, "seed": seed,
                    "task": "mqar", "subtask": "mqar", "cell_id": f"{placement}-{seed}"}
            for metric, value, unit in (("recall_acc", acc + 0.001 * seed, "accuracy"), ("train_steps", steps, "steps"),
                                        ("recall_plateau", 0.25, "accuracy"), ("recall_chance", 0.03, "accuracy"),
                                        ("val_loss", 1.0 + seed, "nats")):
                rows.append({**base, "metric": metric, "value": value, "unit": unit})
    text = build_report_from_frame(pd.DataFrame(rows), tmp_path).read_text()
    assert "### recall_acc by placement" in text and "### train_steps by placement" in text
    steps = text.split("### train_steps by placement")[1].split("###")[0]
    assert "1,400" in steps or "1400" in steps  # the bottom cells never stopped early
    assert "val_loss by placement" not in text  # a recall task's training loss is not LM quality
