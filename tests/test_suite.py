"""Suites: validation messages (one test per class of bad input), expansion, cell hashing."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tests.helpers_tasks  # noqa: F401  (registers the "toy" task)
from harness.cli import app
from harness.model.config import ModelConfig
from harness.sweep import SuiteError, expand_cells, find_suite, load_suite
from harness.sweep.cell import Cell, canonical_json, hash_identity

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def suite_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        expand_cells(load_suite(path))
    msg = str(info.value)
    assert str(path) in msg, "the message must name the file"
    return msg


BASE = """\
name: t
task: analytic
model: {n_layers: 4, d_model: 64, n_heads: 2}
"""


# ---------------------------------------------------------------------------------------------
# cell identity


def test_hash_is_sha256_of_canonical_json():
    identity = {"b": [1, 2.0], "a": {"y": 1.5, "x": None}}
    expected = hashlib.sha256(b'{"a":{"x":null,"y":1.5},"b":[1,2]}').hexdigest()[:16]
    assert hash_identity(identity) == expected
    # golden value: if this changes, every stored result loses its identity
    assert hash_identity(identity) == "ed50af309349a493"


def test_hash_ignores_key_order_int_float_and_suite_name():
    model = ModelConfig(variant="gla", layout="pure", n_layers=2).to_dict()
    shuffled = dict(reversed(list(model.items())))
    shuffled["mlp_ratio"] = 4  # int where the default is the float 4.0
    a = Cell("suite-a", "analytic", {}, model, seq_len=128)
    b = Cell("suite-b", "analytic", {}, shuffled, seq_len=128)
    assert a.cell_id == b.cell_id
    assert len(a.cell_id) == 16 and int(a.cell_id, 16) >= 0
    assert Cell("s", "analytic", {}, model, seq_len=256).cell_id != a.cell_id
    assert Cell("s", "analytic", {}, model, seq_len=128, seed=1).cell_id != a.cell_id
    assert Cell("s", "toy", {}, model, seq_len=128).cell_id != a.cell_id


def test_hash_fills_defaults(tmp_path):
    terse = write(tmp_path, BASE + "axes: {variant: gla, seq_len: [128]}\n", "a.yaml")
    explicit = write(tmp_path, """\
        name: other-name
        task: [{name: analytic, params: {}}]
        model: {n_layers: 4, d_model: 64, n_heads: 2, vocab_size: 256, mlp_ratio: 4, mode: chunk}
        axes: {variant: [gla], layout: pure, seq_len: 128, batch: 1, seed: 0, dtype: float32, device: cpu,
               backend: auto}
        """, "b.yaml")
    (a,), (b,) = expand_cells(load_suite(terse)), expand_cells(load_suite(explicit))
    assert a.cell_id == b.cell_id
    assert a.suite != b.suite


def test_hash_stable_across_processes(tmp_path):
    path = write(tmp_path, BASE + "axes: {variant: [gla, hgrn], seq_len: [128, 256]}\n")
    here = [c.cell_id for c in expand_cells(load_suite(path))]
    code = f"from harness.sweep import *; print([c.cell_id for c in expand_cells(load_suite({str(path)!r}))])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert eval(out.stdout.strip()) == here


def test_cell_round_trips_to_model_config():
    (cell,) = expand_cells(load_suite(REPO / "suites" / "quickstart.yaml"))[:1]
    cfg = cell.model_config()
    assert isinstance(cfg, ModelConfig) and cfg.identity_dict() == dict(cell.model)
    assert json.loads(canonical_json(cell.identity()))["model"]["d_model"] == 64


# ---------------------------------------------------------------------------------------------
# expansion


def test_quickstart_expands():
    cells = expand_cells(load_suite(find_suite("quickstart")))
    assert len({c.cell_id for c in cells}) == len(cells)
    analytic = [c for c in cells if c.task == "analytic"]
    tf = [c for c in analytic if c.model["layout"] == "transformer"]
    assert {c.model["variant"] for c in tf} == {"attention"}
    assert len(tf) == 3  # one per seq_len, not one per variant
    linear = {c.model["variant"] for c in analytic} - {"attention"}
    paper = {"hgrn", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet"}
    assert linear == paper | {"kda", "mamba2", "rwkv7"}
    assert len(analytic) == 9 * 3 * 3 + 3
    # every kind of result: the other tasks run on their own (smaller) axes
    assert {c.task for c in cells} == {"analytic", "efficiency", "mixer_efficiency", "mqar", "lm"}
    assert {c.seq_len for c in cells if c.task == "mqar"} == {64}


def test_unquoted_ratio_is_a_layout_not_a_number(tmp_path):
    # YAML 1.1 reads 3:1 as 181 (base 60); suites read it as the layout "3:1"
    path = write(tmp_path, BASE + "axes: {variant: gla, layout: [3:1, 1:1]}\n")
    assert [c.model["layout"] for c in expand_cells(load_suite(path))] == ["3:1", "1:1"]


def test_layout_is_canonicalised_and_duplicates_merge(tmp_path):
    path = write(tmp_path, BASE + "axes: {variant: gla, layout: [LLLA, '3:1', 'attn:3']}\n")
    notes: list[str] = []
    cells = expand_cells(load_suite(path), notes)
    assert len(cells) == 1 and cells[0].model["layout"] == "3:1" and cells[0].n_full_attn_layers == 1
    assert any("merged 2 duplicate" in n for n in notes)


def test_size_axis_presets_and_inline(tmp_path):
    path = write(tmp_path, """\
        name: sizes
        task: analytic
        model: {n_layers: 2}
        sizes:
          tiny: {d_model: 32, n_heads: 1}
          small: {d_model: 64, n_heads: 2}
        axes:
          variant: gla
          size: [tiny, small, {d_model: 128, n_heads: 4, n_layers: 4}]
        """)
    cells = expand_cells(load_suite(path))
    assert [(c.model["d_model"], c.model["n_heads"], c.model["n_layers"]) for c in cells] == [
        (32, 1, 2), (64, 2, 2), (128, 4, 4)]


def test_param_axis_fills_task_defaults(tmp_path):
    path = write(tmp_path, """\
        name: p
        task_modules: [tests.helpers_tasks]
        task: toy
        params: {sleep_s: 0}
        model: {n_layers: 2, d_model: 32, n_heads: 2}
        axes: {variant: gla, params.behavior: [ok, nan]}
        """)
    cells = expand_cells(load_suite(path))
    assert [c.params["behavior"] for c in cells] == ["ok", "nan"]
    assert cells[0].params == {"sleep_s": 0.0, "behavior": "ok", "bad_seeds": [], "fail_unless_exists": None,
                               "log": None}
    assert cells[0].task_modules == ("tests.helpers_tasks",)


def test_task_entries_can_have_their_own_model_and_axes(tmp_path):
    """One suite, tasks at different scales: the entry's axes replace the suite's (same key)."""
    path = write(tmp_path, """\
        name: p
        task:
          - name: analytic
          - name: analytic
            model: {d_model: 64}
            axes: {seq_len: [64], layout: [pure]}
        model: {n_layers: 2, d_model: 32, n_heads: 2}
        axes: {variant: [gla], layout: [pure, "1:1"], seq_len: [1024, 4096]}
        """)
    cells = expand_cells(load_suite(path))
    got = sorted((c.model["d_model"], c.model["layout"], c.seq_len) for c in cells)
    assert got == sorted([(32, "pure", 1024), (32, "pure", 4096), (32, "1:1", 1024), (32, "1:1", 4096),
                          (64, "pure", 64)])


def test_task_entry_axes_are_validated(tmp_path):
    msg = suite_error(tmp_path, """\
        name: p
        task:
          - name: analytic
            axes: {seq_lenn: [64]}
        model: {n_layers: 2, n_heads: 2}
        axes: {variant: [gla]}
        """)
    assert "seq_lenn" in msg and "Did you mean 'seq_len'" in msg


def test_task_can_impose_the_model_from_its_params(tmp_path):
    """A task evaluating checkpoints sets each cell's model from the checkpoint, not the suite."""
    path = write(tmp_path, """\
        name: p
        task_modules: [tests.helpers_tasks]
        task: toy_checkpoint
        model: {n_layers: 2, d_model: 16, n_heads: 2, variant: hgrn, layout: transformer}
        axes: {params.width: [32, 64]}
        """)
    cells = expand_cells(load_suite(path))
    assert [(c.model["d_model"], c.model["variant"], c.model["layout"]) for c in cells] == [
        (32, "gla", "pure"), (64, "gla", "pure")]


def test_task_refusing_its_params_is_reported(tmp_path):
    msg = suite_error(tmp_path, """\
        name: p
        task_modules: [tests.helpers_tasks]
        task: toy_checkpoint
        model: {n_layers: 2, n_heads: 2}
        axes: {params.width: [-1]}
        """)
    assert "width -1 cannot be a checkpoint" in msg


# ---------------------------------------------------------------------------------------------
# one test per class of bad input


def test_unknown_top_level_key(tmp_path):
    msg = suite_error(tmp_path, BASE + "axis: {variant: [gla]}\n")
    assert "axis: unknown key 'axis'. Did you mean 'axes'?" in msg


def test_unknown_nested_key(tmp_path):
    msg = suite_error(tmp_path, BASE + "axes: {varient: [gla]}\n")
    assert "axes.varient: unknown key 'varient'. Did you mean 'variant'?" in msg
    msg = suite_error(tmp_path, "name: t\ntask: analytic\nmodel: {d_modle: 64}\n")
    assert "model.d_modle: unknown key 'd_modle'. Did you mean 'd_model'" in msg


def test_wrong_type(tmp_path):
    msg = suite_error(tmp_path, BASE + "axes: {variant: gla, seq_len: [128, '256']}\n")
    assert "axes.seq_len[1]: Input should be a valid integer (got '256')" in msg
    msg = suite_error(tmp_path, BASE + "axes: {variant: gla, seq_len: [0]}\n")
    assert "axes.seq_len[0]: Input should be greater than 0" in msg


def test_unknown_variant(tmp_path):
    msg = suite_error(tmp_path, BASE + "axes: {variant: [gla, gated_deltanett]}\n")
    assert "axes.variant[1]: unknown variant 'gated_deltanett'. Did you mean 'gated_deltanet'" in msg
    assert "Registered variants:" in msg


def test_unknown_task(tmp_path):
    msg = suite_error(tmp_path, "name: t\ntask: analytik\n")
    assert "task[0].name: unknown task 'analytik'. Did you mean 'analytic'?" in msg


def test_missing_task(tmp_path):
    msg = suite_error(tmp_path, "name: t\nmodel: {n_layers: 4}\n")
    assert "task: required key is missing" in msg


def test_bad_task_params(tmp_path):
    head = "name: t\ntask_modules: [tests.helpers_tasks]\ntask: toy\n"
    msg = suite_error(tmp_path, head + "params: {sleep: 1}\n")
    assert "params.sleep: unknown key 'sleep'. Did you mean 'sleep_s'?" in msg
    msg = suite_error(tmp_path, head + "axes: {params.behavior: [ok, explode]}\n")
    assert "axes.params.behavior[1]: Input should be 'ok'" in msg
    msg = suite_error(tmp_path, head + "axes: {params.sleeps: [1]}\n")
    assert "axes.params.sleeps: no task of this suite has a parameter 'sleeps'. Did you mean 'sleep_s'?" in msg


def test_unknown_task_module(tmp_path):
    msg = suite_error(tmp_path, "name: t\ntask_modules: [tests.no_such_module]\ntask: analytic\n")
    assert "task_modules[0]: cannot import 'tests.no_such_module'" in msg


def test_impossible_layout_combination(tmp_path):
    msg = suite_error(tmp_path, BASE + "axes: {variant: gla, layout: [pure, '2:1'], n_layers: [3, 4]}\n")
    assert "1 impossible combination" in msg
    assert "variant='gla' layout='2:1' n_layers=4" in msg
    assert "does not fit n_layers=4" in msg
    assert "skip_invalid: true" in msg


def test_skip_invalid_drops_with_note(tmp_path):
    path = write(tmp_path, BASE + "skip_invalid: true\naxes: {variant: gla, layout: [pure, '2:1'], n_layers: [3, 4]}\n")
    notes: list[str] = []
    cells = expand_cells(load_suite(path), notes)
    assert len(cells) == 3
    assert any("skipped 1 impossible combination" in n for n in notes)


def test_impossible_heads_and_mixer_kwargs(tmp_path):
    msg = suite_error(tmp_path,
                      "name: t\ntask: analytic\nmodel: {n_layers: 2, d_model: 64, n_heads: 3}\naxes: {variant: gla}\n")
    assert "cannot build variant 'gla'" in msg and "n_heads=3" in msg
    msg = suite_error(tmp_path, BASE + "axes: {variant: gla, mixer_kwargs: [{expnd_k: 1}]}\n")
    assert "rejected mixer_kwargs" in msg and "expnd_k" in msg


def test_unknown_size_preset(tmp_path):
    msg = suite_error(tmp_path, BASE + "sizes: {tiny: {d_model: 32}}\naxes: {variant: gla, size: [tiny, tinny]}\n")
    assert "axes.size: unknown size preset 'tinny'. Did you mean 'tiny'?" in msg


def test_axis_clash(tmp_path):
    msg = suite_error(tmp_path, BASE + "axes: {variant: gla, d_model: [64], size: [{d_model: 32}]}\n")
    assert "axes.size[0]: sets d_model, which is also an axis" in msg


def test_empty_axis(tmp_path):
    msg = suite_error(tmp_path, BASE + "axes: {variant: []}\n")
    assert "axes.variant: List should have at least 1 item" in msg


def test_yaml_syntax_error(tmp_path):
    msg = suite_error(tmp_path, "name: t\ntask: [analytic\n")
    assert "not valid YAML" in msg and "line" in msg


def test_duplicate_key(tmp_path):
    msg = suite_error(tmp_path, BASE + "axes: {variant: gla}\naxes: {variant: hgrn}\n")
    assert "duplicate key 'axes'" in msg


def test_not_a_mapping(tmp_path):
    msg = suite_error(tmp_path, "- analytic\n")
    assert "a suite must be a YAML mapping" in msg


def test_unknown_suite_name_suggests():
    with pytest.raises(SuiteError, match="Did you mean 'quickstart'"):
        find_suite("quickstrat")


def test_all_problems_reported_at_once(tmp_path):
    msg = suite_error(tmp_path, "name: t\ntask: analytik\nmodel: {d_modle: 1}\naxes: {variant: glaa}\n")
    assert "3 problems" in msg


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_dry_run_lists_cells():
    result = CliRunner().invoke(app, ["sweep", "quickstart", "--dry-run"])
    assert result.exit_code == 0, result.output
    n = len(expand_cells(load_suite(find_suite("quickstart"))))
    assert f"quickstart: {n} cells" in result.output
    assert "gated_deltanet" in result.output


def test_cli_bad_suite_exits_2(tmp_path):
    path = write(tmp_path, BASE + "axes: {varient: gla}\n")
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert "Did you mean 'variant'" in result.output
