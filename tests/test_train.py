"""The training loop, the training tasks (mqar, niah, lm) on tiny settings, and checkpoints."""
from __future__ import annotations

import math

import pytest
import torch

from harness.data import IGNORE
from harness.model.checkpoint import load_checkpoint, save_checkpoint
from harness.model.config import ModelConfig
from harness.model.lm import build_model
from harness.registry import TASKS
from harness.runtime.train import TrainConfig, TrainResult, final_loss_of, lr_lambda, train
from harness.sweep.cell import Cell


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def tiny(variant="attention", layout="transformer", n_layers=1, vocab=32, d=32):
    torch.manual_seed(0)
    return build_model(ModelConfig(variant=variant, layout=layout, n_layers=n_layers, d_model=d, n_heads=2,
                                   vocab_size=vocab))


def shift_data(n=256, T=16, vocab=32, seed=0):
    """Predict the token 3 back: learnable by one attention layer in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, T), generator=g)
    y = torch.full_like(x, IGNORE)
    y[:, 2:-1] = x[:, :-3]
    return {"inputs": x, "targets": y}


def test_loss_goes_down():
    model = tiny()
    r = train(model, shift_data(), TrainConfig(steps=60, lr=1e-2, batch_size=32, seed=0))
    assert r.ok and r.steps == 60 and len(r.losses) == 60
    assert r.final_loss < 0.6 * r.initial_loss
    assert not model.training  # left in eval mode


def test_same_seed_same_losses_other_seed_differs():
    data = shift_data()
    cfg = TrainConfig(steps=8, lr=3e-3, batch_size=16, seed=1)
    a = train(tiny(), data, cfg)
    b = train(tiny(), data, cfg)
    assert a.losses == b.losses and a.final_loss == b.final_loss
    c = train(tiny(), data, TrainConfig(steps=8, lr=3e-3, batch_size=16, seed=2))
    assert c.losses != a.losses  # another batch order


def test_hybrid_model_training_is_deterministic():
    data = shift_data(n=64)
    cfg = TrainConfig(steps=3, lr=3e-3, batch_size=8, seed=0)
    a = train(tiny("gated_deltanet", "1:1", n_layers=2), data, cfg)
    b = train(tiny("gated_deltanet", "1:1", n_layers=2), data, cfg)
    assert a.losses == b.losses


def test_compiled_training_matches_eager_and_reruns_bit_identically():
    """TrainConfig(compile=True): the same losses as eager up to float rounding (the compiled
    graph fuses ops, so not bit for bit), and bit-identical across reruns."""
    data = shift_data(n=64)
    cfg = dict(steps=4, lr=3e-3, batch_size=8, seed=0)
    eager = train(tiny("gla", "1:1", n_layers=2), data, TrainConfig(**cfg))
    a = train(tiny("gla", "1:1", n_layers=2), data, TrainConfig(**cfg, compile=True))
    b = train(tiny("gla", "1:1", n_layers=2), data, TrainConfig(**cfg, compile=True))
    assert a.ok and a.losses == b.losses
    assert a.losses == pytest.approx(eager.losses, rel=1e-4)
    assert a.losses[-1] != a.losses[0]  # it trained


def test_an_added_setting_at_its_default_keeps_the_cell_id(tmp_path):
    """`compile` was added to the training tasks after cells were stored: at its default it is
    not part of the id (the committed example tables still match their suites), set it is."""
    from harness.sweep import expand_cells, load_suite

    text = ("name: t\ntask: mqar\nmodel: {n_layers: 2, d_model: 32, n_heads: 2, vocab_size: 32}\n"
            "params: {steps: 2, n_train: 8, n_test: 4%s}\naxes: {variant: gla, seq_len: [32]}\n")
    def cell(extra: str):
        path = tmp_path / "t.yaml"
        path.write_text(text % extra)
        return expand_cells(load_suite(path))[0]

    plain, default, on = cell(""), cell(", compile: false"), cell(", compile: true")
    assert plain.cell_id == default.cell_id and "compile" not in plain.params
    assert on.cell_id != plain.cell_id and on.params["compile"] is True


def test_nan_is_diverged():
    model = tiny()
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] > 3 else output

    model.lm_head.register_forward_hook(poison)
    r = train(model, shift_data(), TrainConfig(steps=20, batch_size=8, seed=0))
    assert r.status == "diverged" and not r.ok
    assert "non-finite" in r.error and "step 3" in r.error
    assert r.steps == 3  # optimiser steps taken before the bad one
    assert math.isnan(r.final_loss)


def test_loss_blowup_is_diverged():
    model = tiny()
    calls = {"n": 0}

    def blow_up(module, inputs, output):
        calls["n"] += 1
        return output * 1e4 if calls["n"] > 2 else output

    model.lm_head.register_forward_hook(blow_up)
    r = train(model, shift_data(), TrainConfig(steps=20, batch_size=8, seed=0, diverge_factor=10))
    assert r.status == "diverged" and "exceeds 10 x the initial loss" in r.error


def test_early_stop():
    seen = []

    def eval_fn(model):
        seen.append(model.training)
        return 0.5 if len(seen) < 2 else 1.0

    model = tiny()
    r = train(model, shift_data(), TrainConfig(steps=100, batch_size=8, early_stop_acc=0.9, eval_every=5), eval_fn)
    assert r.ok and r.early_stopped
    assert r.steps == 10 and r.evals == [(5, 0.5), (10, 1.0)]


def test_mask_is_the_same_as_ignored_targets():
    d = shift_data(n=32)
    mask = d["targets"] != IGNORE
    full = {"inputs": d["inputs"], "targets": torch.where(mask, d["targets"], d["inputs"]), "mask": mask}
    cfg = TrainConfig(steps=3, batch_size=8, seed=0)
    assert train(tiny(), d, cfg).losses == train(tiny(), full, cfg).losses


def test_callable_data_source():
    def stream(step, g):
        x = torch.randint(0, 32, (8, 16), generator=g)
        return x, torch.roll(x, 1, 1)

    r = train(tiny(), stream, TrainConfig(steps=4, batch_size=8, seed=0))
    assert r.ok and r.steps == 4


def test_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_lambda(0, cfg) == pytest.approx(0.1)
    assert lr_lambda(9, cfg) == pytest.approx(1.0)
    assert lr_lambda(10, cfg) == pytest.approx(1.0)
    assert lr_lambda(55, cfg) == pytest.approx(0.55)
    assert lr_lambda(100, cfg) == pytest.approx(0.1)
    assert TrainConfig(steps=50).warmup == 5
    assert final_loss_of([5.0] * 90 + [1.0] * 10) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        TrainConfig(amp="int8")


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    model = tiny("gated_deltanet", "1:1", n_layers=2, vocab=64)
    train(model, shift_data(n=64, vocab=64), TrainConfig(steps=3, batch_size=8))
    save_checkpoint(model, tmp_path / "ck", extra={"note": "test"})
    loaded = load_checkpoint(tmp_path / "ck")
    x = torch.randint(0, 64, (2, 24))
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.cfg == model.cfg


# ---------------------------------------------------------------------------------------------
# tasks


def cell(task, params, variant="gla", layout="1:1", seq_len=32, vocab=64, seed=0, n_layers=2):
    model = ModelConfig(variant=variant, layout=layout, n_layers=n_layers, d_model=32, n_heads=2,
                        vocab_size=vocab).to_dict()
    return Cell(suite="test", task=task, params=params, model=model, seq_len=seq_len, seed=seed)


def rows_by(rows, metric):
    return [r for r in rows if r["metric"] == metric]


def test_mqar_task_rows_and_determinism():
    task = TASKS.get("mqar")()
    c = cell("mqar", {"steps": 3, "n_train": 64, "n_test": 16, "num_kv_pairs": 4, "eval_lengths": [32, 48]})
    task.check(c)
    rows = task.run(c)
    acc = rows_by(rows, "recall_acc")
    assert [(r["subtask"], r["context_len"]) for r in acc] == [("mqar", 32), ("mqar", 48)]
    assert all(0.0 <= r["value"] <= 1.0 and r.get("status", "ok") == "ok" for r in acc)
    (fl,) = rows_by(rows, "final_loss")
    assert math.isfinite(fl["value"]) and rows_by(rows, "train_steps")[0]["value"] == 3
    again = task.run(c)
    assert [r["value"] for r in rows if r["metric"] != "train_s"] == \
        [r["value"] for r in again if r["metric"] != "train_s"]


def test_niah_task_scores_every_subtask():
    task = TASKS.get("niah")()
    c = cell("niah", {"steps": 2, "n_train": 32, "n_test": 8}, seq_len=64)
    rows = task.run(c)
    assert sorted(r["subtask"] for r in rows_by(rows, "recall_acc")) == \
        ["niah_multikey", "niah_multiquery", "niah_multivalue", "niah_single"]


def test_task_checks_reject_impossible_cells():
    mqar = TASKS.get("mqar")()
    with pytest.raises(ValueError, match="too short"):
        mqar.check(cell("mqar", {"num_kv_pairs": 16}, seq_len=32))
    with pytest.raises(ValueError, match="exceeds the model"):
        mqar.check(cell("mqar", {"vocab_size": 128}))
    with pytest.raises(ValueError, match="haystack"):
        TASKS.get("niah")().check(cell("niah", {}, seq_len=16))
    with pytest.raises(ValueError, match="vocab_size >= 256"):
        TASKS.get("lm")().check(cell("lm", {}, vocab=64))


def test_diverged_training_gives_diverged_rows(monkeypatch):
    import harness.runtime.train

    def fake_train(model, data, cfg, eval_fn=None, device=None):
        return TrainResult(status="diverged", steps=2, losses=[3.0, 2.0, float("nan")], initial_loss=3.0,
                           final_loss=float("nan"), error="non-finite training loss nan at step 2")

    monkeypatch.setattr(harness.runtime.train, "train", fake_train)
    rows = TASKS.get("mqar")().run(cell("mqar", {"steps": 3, "n_train": 16, "n_test": 4, "num_kv_pairs": 4}))
    assert {r["status"] for r in rows} == {"diverged"}
    assert {r["metric"] for r in rows} == {"recall_acc", "final_loss", "train_steps"}
    assert all("non-finite" in r["error"] for r in rows)


def test_recall_task_saves_a_loadable_checkpoint(tmp_path):
    c = cell("mqar", {"steps": 2, "n_train": 16, "n_test": 4, "num_kv_pairs": 4, "save_dir": str(tmp_path)})
    TASKS.get("mqar")().run(c)
    model = load_checkpoint(tmp_path / c.cell_id)
    assert model.cfg.to_dict() == c.model


def test_lm_task_on_a_local_corpus(tmp_path):
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog. " * 200)
    c = cell("lm", {"corpus": str(tmp_path / "t.txt"), "steps": 4, "batch_size": 4, "eval_windows": 4},
             vocab=256)
    task = TASKS.get("lm")()
    task.check(c)
    rows = task.run(c)
    loss = rows_by(rows, "val_loss")[0]["value"]
    assert rows_by(rows, "val_ppl")[0]["value"] == pytest.approx(math.exp(loss))
    assert rows_by(rows, "val_bpb")[0]["value"] == pytest.approx(loss / math.log(2))
    assert all(r["context_len"] == 32 for r in rows if r["metric"].startswith("val_"))
    assert 0 < loss < 6


def test_lm_task_default_corpus_is_pydoc():
    c = cell("lm", {"steps": 1, "batch_size": 2, "eval_windows": 2}, vocab=256, n_layers=1, layout="pure")
    rows = TASKS.get("lm")().run(c)
    assert {r["metric"] for r in rows} >= {"val_loss", "val_ppl", "val_bpb", "final_loss"}
