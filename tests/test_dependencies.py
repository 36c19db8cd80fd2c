"""Train, then evaluate, in one suite: a parameter written `{from: <task>}` is the checkpoint of
the cell of that task with the same axis values (harness.sweep.references), which the runner trains first
and passes in (harness.sweep.driver), with every executor and with resume.

Cheap toy tasks (defined here, registered when this module is imported as
`tests.test_dependencies`, which suites name under task_modules so that pool and Ray workers
import it) test the mechanics; one end-to-end case trains a tiny `lm` model and scores it with
`lm_eval` on the repository's local toy task.
"""
from __future__ import annotations

import io
import json
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

from harness.metrics import Metric, register_metric
from harness.registry import register_task
from harness.tasks.base import Task, metric_row

for _name in ("produced", "consumed"):
    register_metric(Metric(_name, "count", _name, None, "reference", ("dep_producer", "dep_consumer"),
                           "a test task's metric"))

REPO = Path(__file__).resolve().parent.parent
MODULE = "tests.test_dependencies"

# pytest imports this file as `test_dependencies`; the tasks belong to the importable name only
if __name__ != MODULE:
    import importlib

    importlib.import_module(MODULE)

    def _register(name):  # noqa: ARG001
        return lambda cls: cls
else:
    _register = register_task


def _log(path: str | None, line: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@_register("dep_producer")
class DepProducer(Task):
    """'Trains' a model: writes a checkpoint-shaped directory holding value * (seed + 1)."""

    saves_checkpoint = True

    class Params(Task.Params):
        value: float = 1.0
        fail_seeds: list[int] = []
        fail_unless_exists: str | None = None
        log: str | None = None
        source: str | None = None  # may be a reference (for the cycle check)

    def run(self, cell):
        p = self.params(cell)
        _log(p.log, f"producer {cell.cell_id}")
        if cell.seed in p.fail_seeds and not (p.fail_unless_exists and Path(p.fail_unless_exists).exists()):
            raise RuntimeError(f"producer failure at seed {cell.seed}")
        value = p.value * (cell.seed + 1)
        if cell.checkpoint_dir:
            d = Path(cell.checkpoint_dir)
            d.mkdir(parents=True, exist_ok=True)
            (d / "model.safetensors").write_bytes(b"weights")
            (d / "config.json").write_text(json.dumps({"value": value, "cell_id": cell.cell_id}))
        return [metric_row("produced", value, "count")]


@_register("dep_consumer")
class DepConsumer(Task):
    """'Evaluates' a checkpoint: reports the producer's value times `scale`."""

    class Params(Task.Params):
        checkpoint: str | None = None
        scale: float = 1.0
        log: str | None = None

    def check(self, cell):
        if self.params(cell).scale < 0:
            raise ValueError("scale must be >= 0")

    def run(self, cell):
        p = self.params(cell)
        _log(p.log, f"consumer {cell.cell_id}")
        meta = json.loads((Path(p.checkpoint) / "config.json").read_text())
        assert Path(p.checkpoint).name == meta["cell_id"]
        return [metric_row("consumed", meta["value"] * p.scale, "count")]


# ---------------------------------------------------------------------------------------------

from harness.sweep import SuiteError, expand_cells, load_suite  # noqa: E402
from harness.sweep.driver import run_sweep  # noqa: E402
from harness.sweep.store import load_results  # noqa: E402
from harness.sweep.validate import validate  # noqa: E402


def suite_dict(**over) -> dict:
    raw = {
        "name": "deps",
        "task_modules": [MODULE],
        "model": {"n_layers": 2, "d_model": 32, "n_heads": 2},
        "axes": {"variant": ["gla"], "layout": ["pure", "1:1"], "seq_len": [64], "seed": [0, 1]},
        "task": [
            {"name": "dep_consumer", "params": {"checkpoint": {"from": "dep_producer"}, "scale": 10.0}},
            {"name": "dep_producer", "params": {"value": 2.0}},
        ],
    }
    raw.update(over)
    return raw


def sweep(raw: dict, out: Path, **kw):
    cells = expand_cells(validate(raw, None))
    return cells, run_sweep(raw["name"], cells, out, console=Console(file=io.StringIO()), progress=False, **kw)


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def values(table: pd.DataFrame, metric: str) -> dict[tuple, float]:
    t = table[table.metric == metric]
    return {(r.layout, r.seed): r.value for r in t.itertuples()}


# ---------------------------------------------------------------------------------------------
# Expansion: matching, identity


def test_consumer_names_its_producer_and_takes_its_model():
    cells = expand_cells(validate(suite_dict(), None))
    producers = {(c.model["layout"], c.seed): c for c in cells if c.task == "dep_producer"}
    consumers = [c for c in cells if c.task == "dep_consumer"]
    assert len(producers) == len(consumers) == 4
    assert [c.task for c in cells[:4]] == ["dep_consumer"] * 4  # tasks in the order written
    for c in consumers:
        (dep,) = c.dependencies()
        prod = producers[(c.model["layout"], c.seed)]
        assert dep == (("checkpoint", "dep_producer", prod.cell_id))
        assert c.params["checkpoint"] == {"from": "dep_producer", "cell": prod.cell_id}
        assert dict(c.model) == dict(prod.model)
        assert prod.dependencies() == []


def test_producer_is_part_of_the_consumer_identity():
    a = expand_cells(validate(suite_dict(), None))
    raw = suite_dict()
    raw["task"][1]["params"]["value"] = 3.0  # a different producer, the same consumer settings
    b = expand_cells(validate(raw, None))
    ids = lambda cells, task: sorted(c.cell_id for c in cells if c.task == task)  # noqa: E731
    assert set(ids(a, "dep_producer")).isdisjoint(ids(b, "dep_producer"))
    assert set(ids(a, "dep_consumer")).isdisjoint(ids(b, "dep_consumer"))
    assert ids(a, "dep_consumer") == ids(expand_cells(validate(suite_dict(), None)), "dep_consumer")  # stable


def test_a_producer_axis_the_consumer_lacks_gives_one_consumer_per_producer():
    # params.value is the producer's alone, but a suite axis: each consumer cell matches its own
    raw = suite_dict(axes={"layout": ["pure"], "seed": [0], "seq_len": [64], "params.value": [1.0, 2.0]})
    raw["task"][1]["params"] = {}
    cells = expand_cells(validate(raw, None))
    consumers = [c for c in cells if c.task == "dep_consumer"]
    assert len(consumers) == 2
    assert len({c.dependencies()[0].cell_id for c in consumers}) == 2


def test_selector_picks_the_producer_cell():
    # the consumer evaluates at its own lengths the model trained at 64
    raw = suite_dict(axes={"layout": ["pure"], "seed": [0]})
    raw["task"][1]["axes"] = {"seq_len": [64, 128]}
    raw["task"][0]["axes"] = {"seq_len": [256, 512]}
    raw["task"][0]["params"]["checkpoint"] = {"from": "dep_producer", "seq_len": 64}
    cells = expand_cells(validate(raw, None))
    prod64 = next(c for c in cells if c.task == "dep_producer" and c.seq_len == 64)
    consumers = [c for c in cells if c.task == "dep_consumer"]
    assert sorted(c.seq_len for c in consumers) == [256, 512]
    assert {c.dependencies()[0].cell_id for c in consumers} == {prod64.cell_id}


def test_reference_as_an_axis_value(tmp_path):
    raw = suite_dict(axes={"layout": ["pure"], "seed": [0], "seq_len": [64],
                           "params.checkpoint": [{"from": "dep_producer"}, str(tmp_path)]})
    raw["task"][0]["params"] = {}
    cells = expand_cells(validate(raw, None))
    consumers = [c for c in cells if c.task == "dep_consumer"]
    assert sorted(len(c.dependencies()) for c in consumers) == [0, 1]


# ---------------------------------------------------------------------------------------------
# Validation: every problem at once, each with a suggestion


def errors_of(raw: dict) -> str:
    with pytest.raises(SuiteError) as info:
        expand_cells(validate(raw, None))
    return str(info.value)


def test_unknown_and_non_producing_tasks_are_named_with_suggestions():
    raw = suite_dict()
    raw["task"][0]["params"]["checkpoint"] = {"from": "dep_produce", "sed": 0}
    raw["task"].append({"name": "dep_consumer", "params": {"checkpoint": {"from": "dep_consumer"}, "scale": 2.0}})
    raw["task"].append({"name": "analytic"})
    raw["task"].append({"name": "dep_consumer", "params": {"checkpoint": {"from": "analytic"}, "scale": 3.0}})
    raw["task"].append({"name": "dep_consumer", "params": {"checkpoint": {"from": "dep_producer", "sed": 0}}})
    msg = errors_of(raw)
    assert "invalid suite (4 problems)" in msg
    assert "task[0].params.checkpoint: {from: dep_produce, sed: 0} names no task of this suite. " \
           "Did you mean 'dep_producer'?" in msg
    assert "task[2].params.checkpoint: task 'dep_consumer' saves no checkpoint" in msg
    assert "task[4].params.checkpoint: task 'analytic' saves no checkpoint" in msg and "Tasks that do: " in msg
    assert "task[5].params.checkpoint: 'sed' is not an axis of task 'dep_producer'" in msg
    assert "Did you mean 'seed'?" in msg


def test_selector_value_the_producer_lacks():
    raw = suite_dict()
    raw["task"][0]["params"]["checkpoint"] = {"from": "dep_producer", "seed": 7}
    msg = errors_of(raw)
    assert "task[0].params.checkpoint.seed: task 'dep_producer' has no cell with seed=7; its values: 0, 1" in msg


def test_cycle_is_an_error():
    raw = suite_dict()
    raw["task"][1]["params"]["source"] = {"from": "dep_producer"}
    msg = errors_of(raw)
    assert "a cycle of references: task[1] (dep_producer) -> task[1] (dep_producer)" in msg


def test_ambiguous_and_unmatched_references_list_every_cell_with_a_fix():
    raw = suite_dict(axes={"layout": ["pure"], "seed": [0]})
    raw["task"][1]["axes"] = {"seq_len": [64, 128]}  # two producers per consumer
    raw["task"][0]["axes"] = {"seq_len": [64, 256]}  # 64 matches by value, 256 nothing
    raw["task"].append({"name": "dep_consumer", "params": {"checkpoint": {"from": "dep_producer"}, "scale": 2.0}})
    msg = errors_of(raw)
    assert "2 cells whose reference to another task's checkpoint matches no cell or several" in msg
    assert "task 'dep_producer' has no cell with seq_len=256 (its values: 64, 128)" in msg
    assert "e.g. {from: dep_producer, seq_len: 64}" in msg
    assert "matches 2 cells of task 'dep_producer', which differ in seq_len: 64, 128" in msg
    assert "make seq_len an axis of the suite" in msg


def test_consumer_of_an_impossible_producer_follows_skip_invalid():
    raw = suite_dict(skip_invalid=True)
    raw["task"][1]["axes"] = {"n_heads": [2, 3]}  # 3 does not divide the head dims
    raw["task"][0]["params"]["checkpoint"] = {"from": "dep_producer", "n_heads": 2}
    assert len(expand_cells(validate(raw, None))) == 8
    raw["task"][0]["params"]["checkpoint"] = {"from": "dep_producer"}
    raw["task"][0]["axes"] = {"n_heads": [2, 3]}
    notes: list[str] = []
    assert len(expand_cells(validate(raw, None), notes)) == 8
    assert "skipped 8 impossible combination(s)" in notes[0]
    assert any("the 'dep_producer' cell it names is an impossible combination" in n for n in notes)
    msg = errors_of({**raw, "skip_invalid": False})
    assert "8 impossible combinations" in msg and "the 'dep_producer' cell it names is an impossible" in msg


# ---------------------------------------------------------------------------------------------
# Running: order, checkpoints, failures, resume, executors


def test_serial_runs_producers_first_and_passes_checkpoints(tmp_path):
    log = tmp_path / "log"
    raw = suite_dict()
    raw["task"][0]["params"]["log"] = raw["task"][1]["params"]["log"] = str(log)
    cells, summary = sweep(raw, tmp_path / "res")
    assert summary.ok and sum(summary.ran.values()) == 8
    lines = log_lines(log)
    assert [line.split()[0] for line in lines] == ["producer"] * 4 + ["consumer"] * 4
    table = load_results(tmp_path / "res")
    assert values(table, "consumed") == {k: 10 * v for k, v in values(table, "produced").items()}
    assert values(table, "produced")[("pure", 1)] == 4.0
    for c in cells:
        if c.task == "dep_producer":
            assert (tmp_path / "res" / "checkpoints" / c.cell_id / "config.json").is_file()
    # the params column names the producer
    row = table[table.metric == "consumed"].iloc[0]
    assert json.loads(row.params)["checkpoint"]["from"] == "dep_producer"

    # resume: nothing recomputed
    _, again = sweep(raw, tmp_path / "res")
    assert again.n_skipped == 8 and sum(again.ran.values()) == 0 and again.ok
    assert log_lines(log) == lines

    # a consumer to run whose producer's checkpoint is gone: that producer runs again, once
    consumer = next(c for c in cells if c.task == "dep_consumer")
    (tmp_path / "res" / "cells" / f"{consumer.cell_id}.parquet").unlink()
    shutil.rmtree(tmp_path / "res" / "checkpoints" / consumer.dependencies()[0].cell_id)
    _, third = sweep(raw, tmp_path / "res")
    assert third.ok and sum(third.ran.values()) == 2 and third.n_skipped == 6
    assert log_lines(log)[len(lines):] == [f"producer {consumer.dependencies()[0].cell_id}",
                                           f"consumer {consumer.cell_id}"]


def test_failed_producer_gives_a_failed_consumer_row_and_retry_recovers(tmp_path):
    marker = tmp_path / "fixed"
    raw = suite_dict()
    raw["task"][1]["params"].update(fail_seeds=[1], fail_unless_exists=str(marker))
    cells, summary = sweep(raw, tmp_path / "res")
    assert summary.ran == {"ok": 4, "failed": 4}
    table = load_results(tmp_path / "res")
    bad = table[(table.task == "dep_consumer") & (table.seed == 1)]
    assert len(bad) == 2 and set(bad.status) == {"failed"}
    by_id = {c.cell_id: c for c in cells}
    for r in bad.itertuples():
        dep = by_id[r.cell_id].dependencies()[0]
        assert "not run: its input 'checkpoint' is the checkpoint of dep_producer" in r.error
        assert dep.cell_id in r.error and "producer failure at seed 1" in r.error
    # a rerun without --retry-failed runs nothing; with it, the producer and then its consumer
    _, again = sweep(raw, tmp_path / "res")
    assert sum(again.ran.values()) == 0 and len(again.not_ok) == 4
    marker.touch()
    _, retried = sweep(raw, tmp_path / "res", retry_failed=True)
    assert retried.ok and retried.ran == {"ok": 4}


def test_stored_failed_producer_is_named_for_a_new_consumer(tmp_path):
    raw = suite_dict()
    raw["task"][1]["params"]["fail_seeds"] = [1]
    producer_only = {**raw, "task": [raw["task"][1]]}
    sweep(producer_only, tmp_path / "res")
    _, summary = sweep(raw, tmp_path / "res")
    table = load_results(tmp_path / "res")
    bad = table[(table.task == "dep_consumer") & (table.status != "ok")]
    assert len(bad) == 2
    assert all("stored as failed by an earlier run; --retry-failed" in e for e in bad.error)
    # the ok producers ran before anything consumed them, so without a checkpoint: they re-run
    assert summary.ran == {"ok": 4, "failed": 2}


def test_consumer_run_outside_a_sweep_fails_cleanly():
    from harness.sweep.run_cell import execute_cell, make_context

    consumer = next(c for c in expand_cells(validate(suite_dict(), None)) if c.task == "dep_consumer")
    (row,) = execute_cell(consumer, make_context())
    assert row["status"] == "failed" and "unresolved input(s): checkpoint" in row["error"]


def _drop_timing(t: pd.DataFrame) -> pd.DataFrame:
    return t.drop(columns=["wall_s", "started_at"])


def test_pool_matches_serial(tmp_path):
    raw = suite_dict()
    raw["task"][1]["params"]["fail_seeds"] = [1]
    sweep(raw, tmp_path / "serial")
    _, summary = sweep(raw, tmp_path / "pool", executor="pool", workers=2)
    assert summary.ran == {"ok": 4, "failed": 4}
    a, b = load_results(tmp_path / "serial"), load_results(tmp_path / "pool")
    # the error of a consumer names the producer's checkpoint path only through its id
    pd.testing.assert_frame_equal(_drop_timing(a), _drop_timing(b))


def test_ray_matches_serial(tmp_path):
    pytest.importorskip("ray")
    raw = suite_dict()
    sweep(raw, tmp_path / "serial")
    _, summary = sweep(raw, tmp_path / "ray", executor="ray", workers=2)
    assert summary.ok and summary.ran == {"ok": 8}
    pd.testing.assert_frame_equal(_drop_timing(load_results(tmp_path / "serial")),
                                  _drop_timing(load_results(tmp_path / "ray")))


# ---------------------------------------------------------------------------------------------
# End to end: train a tiny lm, evaluate it with lm_eval


def test_example_suite_validates():
    pytest.importorskip("lm_eval")
    suite = load_suite(REPO / "suites" / "cpu-lm-then-eval.yaml")
    cells = expand_cells(suite)
    lm = {c.cell_id: c for c in cells if c.task == "lm"}
    evals = [c for c in cells if c.task == "lm_eval"]
    assert lm and len(evals) == len(lm)
    assert {c.dependencies()[0].cell_id for c in evals} == set(lm)


def tiny_lm_then_eval() -> dict:
    raw = yaml.safe_load((REPO / "suites" / "cpu-lm-then-eval.yaml").read_text())
    raw["axes"] = {"variant": ["gla"], "layout": ["1:1"], "seq_len": [32], "seed": [0]}
    raw["task"][0]["params"].update(steps=3, batch_size=4, eval_windows=2)
    raw["task"][1]["params"].update(limit=4)
    return raw


def test_lm_then_lm_eval_end_to_end(tmp_path):
    pytest.importorskip("lm_eval")
    raw = tiny_lm_then_eval()
    cells, summary = sweep(raw, tmp_path / "serial")
    assert summary.ok, summary.not_ok
    lm_cell = next(c for c in cells if c.task == "lm")
    ckpt = tmp_path / "serial" / "checkpoints" / lm_cell.cell_id
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["cell_id"] == lm_cell.cell_id and meta["task"] == "lm"
    table = load_results(tmp_path / "serial")
    ev = table[table.task == "lm_eval"]
    assert "lm_eval/harness_toy_mc/acc" in set(ev.metric)
    assert set(ev.status) == {"ok"} and set(ev.layout) == {"1:1"}

    # resume recomputes nothing
    _, again = sweep(raw, tmp_path / "serial")
    assert sum(again.ran.values()) == 0 and again.n_skipped == 2

    # the pool gives the same table (training and scoring are deterministic)
    _, pooled = sweep(raw, tmp_path / "pool", executor="pool", workers=2)
    assert pooled.ok
    same = lambda t: _drop_timing(t[t.metric != "train_s"]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(same(load_results(tmp_path / "serial")), same(load_results(tmp_path / "pool")))


def test_suite_file_round_trip(tmp_path):
    """The YAML form users write: `checkpoint: {from: dep_producer}`."""
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: s
        task_modules: [{MODULE}]
        axes: {{layout: [pure], seed: [0, 1]}}
        task:
          - name: dep_producer
          - name: dep_consumer
            params: {{checkpoint: {{from: dep_producer}}}}
        """))
    cells = expand_cells(load_suite(path))
    assert sum(bool(c.dependencies()) for c in cells) == 2
