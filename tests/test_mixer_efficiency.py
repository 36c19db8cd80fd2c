"""The mixer-level efficiency task: fla's references compute what our ops compute, the rows are
the documented ones, bad layouts are refused, out-of-memory is a row, and a sweep of it reaches
the report's crossover and op tables."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.integrations.fla_references import fla_available, fla_reference, op_kwargs
from harness.model.config import ModelConfig
from harness.model.lm import build_model
from harness.ops.dispatch import get_op
from harness.tasks.mixer_efficiency import LAYER_METRICS, OP_METRICS, MixerEfficiency, _capture_op_call, mixer_job

ROOT = Path(__file__).resolve().parent.parent
LINEAR = ["hgrn", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet", "kda", "mamba2", "rwkv7"]
needs_fla = pytest.mark.skipif(not fla_available(), reason="flash-linear-attention not installed")


def _op_call(variant: str, T: int = 64, d_model: int = 32, n_heads: int = 2):
    """(family, keyword arguments) of the op call a one-layer model's mixer makes on random x."""
    torch.manual_seed(0)
    cfg = ModelConfig(variant=variant, layout="pure", n_layers=1, d_model=d_model, n_heads=n_heads, vocab_size=16)
    mixer = build_model(cfg, "cpu", torch.float64, "torch").layers[0].mixer
    seen = _capture_op_call(mixer)
    with torch.no_grad():
        mixer(torch.randn(2, T, d_model, dtype=torch.float64))
    family, args, kwargs = seen["call"]
    return family, op_kwargs(family, args, kwargs)


@needs_fla
@pytest.mark.parametrize("variant", LINEAR)
def test_fla_reference_computes_our_op(variant):
    """The baseline is the same computation: fla's naive output equals our chunked op's on the
    layer's own inputs (scales, gates and all)."""
    family, kw = _op_call(variant)
    ref = fla_reference(family, kw)
    assert ref is not None
    ours = get_op(family, "chunk", "torch")(**kw)[0]
    theirs = ref.fn(**kw).to(ours.dtype)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    assert ref.stepwise == (variant in ("gla", "hgrn2", "hgrn"))  # per-channel decay and HGRN: step loops


@needs_fla
@pytest.mark.parametrize("variant", ["kda", "rwkv7"])
def test_step_loop_references_at_ragged_lengths(variant):
    """KDA and DPLR have fla chunked references only for whole chunks; otherwise the step loop."""
    family, kw = _op_call(variant, T=45)
    ref = fla_reference(family, kw)
    assert ref is not None and ref.stepwise
    ours = get_op(family, "chunk", "torch")(**kw)[0]
    torch.testing.assert_close(ref.fn(**kw).to(ours.dtype), ours, rtol=1e-4, atol=1e-5)


@needs_fla
def test_no_reference_where_fla_has_none():
    family, kw = _op_call("deltanet", T=48)  # delta_rule_chunkwise needs T % 32 == 0
    assert fla_reference(family, kw) is None
    family, kw = _op_call("gla")
    assert fla_reference(family, {**kw, "initial_state": torch.zeros(1)}) is None


def _spec(variant="gated_deltanet", layout="pure", seq_len=64, **params):
    p = MixerEfficiency.Params(**{"warmup": 0, "repeats": 2, "decode_steps": 2, "decode_warmup": 0,
                                  "isolate": "none", **params})
    cfg = ModelConfig(variant=variant, layout=layout, n_layers=1, d_model=32, n_heads=2, vocab_size=16)
    return {"model": cfg.to_dict(), "seq_len": seq_len, "batch": 1, "seed": 0, "dtype": "float32",
            "device": "cpu", "backend": "torch", "params": p.model_dump(mode="json"), "threads": 1, "clock": "cpu"}


def _rows(spec):
    return [r for r in mixer_job(spec) if isinstance(r, dict)]


def test_rows_of_a_linear_layer_and_its_op():
    rows = _rows(_spec())
    got = {(r["metric"], r.get("subtask")) for r in rows}
    layer = {(m, None) for m in LAYER_METRICS.values()}
    impls = ["harness", "sdpa"] + (["fla_naive"] if fla_available() else [])
    ops = {(m, i) for m in OP_METRICS.values() for i in impls}
    assert got == layer | ops
    for r in rows:
        assert r["value"] > 0 and r.get("status") is None
        if r["unit"] == "s":
            assert r["clock"] == "cpu" and r["threads"] == 1 and r["cpu_time_s"] > 0


def test_rows_of_the_attention_layer_and_what_is_left_out():
    rows = _rows(_spec("attention", "transformer", measure=["forward", "decode"], impls=["harness", "sdpa"]))
    got = {(r["metric"], r.get("subtask")) for r in rows}
    # its op is SDPA itself; no train stage asked, so no backward or peak rows
    assert got == {("mixer_fwd_s", None), ("mixer_decode_step_s", None), ("op_fwd_s", "sdpa")}


def test_recurrent_mode_is_the_step_by_step_op():
    rows = _rows(_spec("hgrn", seq_len=16, mode="recurrent", impls=["harness"], measure=["train"]))
    assert {r["metric"] for r in rows} == {"mixer_fwd_bwd_s", "op_fwd_bwd_s"}


def test_out_of_memory_in_backward_is_a_row_and_the_rest_still_runs(monkeypatch):
    import harness.runtime.timing as measure

    real = measure.time_calls

    def fake(fn, *a, **kw):
        if fn.__name__ in ("layer_fwd_bwd", "fwd_bwd"):
            raise MemoryError("can't allocate memory")
        return real(fn, *a, **kw)

    monkeypatch.setattr(measure, "time_calls", fake)
    rows = _rows(_spec(impls=["harness"]))
    status = {(r["metric"], r.get("subtask")): r.get("status", "ok") for r in rows}
    assert status[("mixer_fwd_s", None)] == "ok" and status[("op_fwd_s", "harness")] == "ok"
    for key in [("mixer_fwd_bwd_s", None), ("mixer_fwd_bwd_peak_bytes", None), ("mixer_decode_step_s", None),
                ("op_fwd_bwd_s", "harness"), ("op_fwd_bwd_peak_bytes", "harness")]:
        assert status[key] == "oom", key


def _suite(tmp_path, layouts, seq_lens=(64, 256)) -> Path:
    path = tmp_path / "mixer.yaml"
    path.write_text(
        "name: mixer-test\n"
        "task:\n  - name: mixer_efficiency\n"
        "    params: {warmup: 0, repeats: 1, decode_steps: 2, decode_warmup: 0, impls: [harness, sdpa]}\n"
        "model: {n_layers: 4, d_model: 32, n_heads: 2, vocab_size: 16}\n"
        f"axes:\n  variant: [gla]\n  layout: {list(layouts)}\n  seq_len: {list(seq_lens)}\n")
    return path


def test_a_layout_that_is_not_one_layer_is_refused(tmp_path):
    from harness.sweep import SuiteError, expand_cells, load_suite

    with pytest.raises(SuiteError) as info:
        expand_cells(load_suite(_suite(tmp_path, ["pure", "3:1"])), [])
    assert "task 'mixer_efficiency' sets {\"n_layers\":1} on the model" in str(info.value)
    cells = expand_cells(load_suite(_suite(tmp_path, ["pure", "transformer"])), [])
    assert {c.model["n_layers"] for c in cells} == {1}  # the task imposes one layer
    assert {c.model["variant"] for c in cells} == {"gla", "attention"}


def test_sweep_reaches_the_crossover_and_op_tables(tmp_path):
    """End to end: sweep (isolated workers) -> results -> report sections built from them."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(_suite(tmp_path, ["pure", "transformer"])),
                        "--out", str(out), "--no-report"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    df = pd.read_parquet(out / "results.parquet")
    assert (df["status"] == "ok").all()
    from harness.report.crossover import crossover_table

    table = crossover_table(df)
    assert set(table["metric"]) == {"mixer_fwd_bwd_s", "mixer_fwd_s", "mixer_decode_step_s"}
    from harness.report.markdown import render
    from harness.report.normalise import normalize

    # render takes a normalised table, as build_report gives it
    text, _ = render(normalize(df), tmp_path / "figures", "results.parquet", "harness report")
    assert "### One mixer layer vs length" in text and "mixer_fwd_bwd_s vs seq_len" in text
    op = df[(df.metric == "op_fwd_bwd_s") & (df.variant == "gla") & (df.seq_len == 256)].set_index("subtask")["value"]
    assert f"{op['harness'] / op['sdpa']:.2f}×" in text  # the op table's ours / SDPA column
