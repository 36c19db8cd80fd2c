"""The efficiency suite: timing statistics, peak memory, OOM handling, the `efficiency` task's
rows, cache bytes against the analytic costs, crossover lengths, and the two suites."""
from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.model.config import ModelConfig
from harness.model.costs import model_costs
from harness.model.lm import build_model
from harness.report.crossover import analytic_crossover, crossing, crossover_table, decode_ratio, measured_crossover
from harness.runtime.devices import is_oom
from harness.runtime.isolate import WorkerDied, run_isolated
from harness.runtime.memory import PeakMemory
from harness.runtime.timing import summarize, time_calls
from harness.sweep.cell import Cell
from harness.tasks.efficiency import Efficiency, make_spec

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(n_layers=2, d_model=32, n_heads=2, vocab_size=64)


def _cell(variant="gated_deltanet", layout="1:1", seq_len=32, device="cpu", **params) -> Cell:
    cfg = ModelConfig(variant=variant, layout=layout, **TINY)
    p = Efficiency.Params(**{"warmup": 1, "repeats": 2, "decode_steps": 2, "decode_warmup": 1, **params})
    return Cell(suite="t", task="efficiency", params=p.model_dump(mode="json"), model=cfg.to_dict(),
                seq_len=seq_len, device=device)


# ---------------------------------------------------------------------------------------------
# timing statistics


def test_summarize_median_and_iqr():
    assert summarize([5.0]) == (5.0, 0.0)
    med, iqr = summarize([1, 2, 3, 4, 100])  # sorted; q25 = 2, q75 = 4 (linear interpolation)
    assert med == 3 and iqr == 2
    med, iqr = summarize([4, 1, 3, 2])  # q25 = 1.75, q75 = 3.25
    assert med == 2.5 and iqr == pytest.approx(1.5)


def test_time_calls_on_a_fake_timer():
    """Each timed call reads the clock twice; the warm-up calls are not timed."""
    durations = iter([0.5, 0.1, 0.3, 0.2, 0.4])
    clock = {"t": 0.0, "started": False}

    def timer():
        if clock["started"]:
            clock["t"] += next(durations)
        clock["started"] = not clock["started"]
        return clock["t"]

    calls = []
    t = time_calls(lambda: calls.append(1), warmup=3, repeats=5, timer=timer)
    assert len(calls) == 8
    assert t.samples == pytest.approx([0.5, 0.1, 0.3, 0.2, 0.4])
    assert t.median == pytest.approx(0.3) and t.spread == pytest.approx(0.4 - 0.2) and t.n == 5
    rate, _ = t.rate(1000)  # tokens/s per sample: median of 1000 / t
    assert rate == pytest.approx(1000 / 0.3)


def _fake(durations):
    """A clock that advances by the next duration between each start and stop reading."""
    it, state = iter(durations), {"t": 0.0, "started": False}

    def timer():
        if state["started"]:
            state["t"] += next(it)
        state["started"] = not state["started"]
        return state["t"]
    return timer


def test_time_calls_records_both_clocks_and_reports_the_chosen_one():
    wall, cpu = [0.30, 0.50, 0.40], [0.10, 0.12, 0.11]
    t = time_calls(lambda: None, warmup=0, repeats=3, timer=_fake(wall), cpu_timer=_fake(cpu), clock="cpu")
    assert t.samples == pytest.approx(wall) and t.cpu_samples == pytest.approx(cpu)
    assert t.median == pytest.approx(0.11) and t.wall_median == pytest.approx(0.40)
    assert t.rate(1.0)[0] == pytest.approx(1 / 0.11)
    t.clock = "wall"
    assert t.median == pytest.approx(0.40)
    with pytest.raises(ValueError, match="unknown clock"):
        time_calls(lambda: None, 0, 1, clock="gpu")


@pytest.mark.parametrize("wall,cpu,threads,loaded", [
    (0.10, 0.10, 1, False),   # an idle core: the clocks agree
    (0.13, 0.10, 1, True),    # waited for a core: wall 30% above CPU time
    (0.10, 0.13, 1, True),    # one thread cannot burn more CPU than wall time: something else ran
    (0.10, 0.19, 2, False),   # two threads: CPU time may exceed wall time
    (0.13, 0.10, 2, True),
])
def test_loaded_flag(wall, cpu, threads, loaded):
    t = time_calls(lambda: None, warmup=0, repeats=1, timer=_fake([wall]), cpu_timer=_fake([cpu]), clock="cpu")
    assert t.loaded(threads) is loaded
    prov = t.provenance(threads, on_cpu=True)
    assert prov == {"clock": "cpu", "wall_time_s": pytest.approx(wall), "cpu_time_s": pytest.approx(cpu),
                    "threads": threads, "loaded": loaded}
    assert "cpu_time_s" not in t.provenance(threads, on_cpu=False)  # CUDA: the host's CPU time says nothing


def test_clock_and_threads_defaults():
    from harness.tasks.measuring import resolve_clock

    spec = make_spec(_cell(), Efficiency.Params(), threads=8)
    assert spec["threads"] == 1 and spec["clock"] == "cpu"  # CPU: one thread, CPU time
    spec = make_spec(_cell(), Efficiency.Params(threads=2), threads=8)
    assert spec["threads"] == 2 and spec["clock"] == "wall"
    spec = make_spec(_cell(device="cuda"), Efficiency.Params(), threads=8)
    assert spec["threads"] == 8 and spec["clock"] == "wall"
    assert resolve_clock("wall", "cpu", 1) == "wall"
    with pytest.raises(ValueError, match="clock: cpu"):
        Efficiency().check(_cell(device="cuda", clock="cpu"))


def test_time_calls_wraps_only_the_first_timed_call():
    entered = []

    class Probe:
        def __enter__(self):
            entered.append(len(calls))

        def __exit__(self, *exc):
            entered.append(len(calls))

    calls = []
    time_calls(lambda: calls.append(1), warmup=2, repeats=3, around_first=Probe)
    assert entered == [2, 3]  # around the third call: the first timed one


# ---------------------------------------------------------------------------------------------
# out of memory


def test_is_oom():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_oom(MemoryError())
    assert is_oom(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert not is_oom(ValueError("shapes do not match"))


def test_an_oom_stage_becomes_oom_rows_and_the_rest_still_runs(monkeypatch):
    """Training raises torch.OutOfMemoryError: its rows say oom, prefill and decode are measured."""
    from harness.model.lm import HybridLM

    real = HybridLM.forward

    def forward(self, tokens, cache=None, mode=None, last_only=False):
        if torch.is_grad_enabled() and self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")
        return real(self, tokens, cache, mode, last_only)

    monkeypatch.setattr(HybridLM, "forward", forward)
    cell = _cell(isolate="none", decode_contexts=[8, 32])
    rows = Efficiency().run(cell)
    by = {(r["metric"], r.get("context_len")): r for r in rows}
    for m in ("train_step_s", "train_tokens_per_s", "peak_mem_bytes"):
        assert by[(m, None)]["status"] == "oom" and by[(m, None)]["value"] is None
        assert "OutOfMemoryError" in by[(m, None)]["error"]
    for key in (("prefill_s", None), ("prefill_peak_mem_bytes", None), ("decode_token_s", 8), ("decode_token_s", 32)):
        assert by[key].get("status", "ok") == "ok" and by[key]["value"] > 0


def _killed_job(n):
    yield ("stage", "before")
    yield {"metric": "a", "value": 1.0, "unit": "s"}
    yield ("stage", "dying")
    os.kill(os.getpid(), signal.SIGKILL)
    yield {"metric": "b", "value": 2.0, "unit": "s"}


def _memory_error_job():
    raise MemoryError("simulated")
    yield  # pragma: no cover


def test_a_worker_killed_by_sigkill_is_reported_as_oom():
    got = []
    with pytest.raises(WorkerDied) as info:
        run_isolated(_killed_job, 1, on_item=got.append)
    assert info.value.oom and info.value.stage == "dying"
    assert "SIGKILL" in str(info.value)
    assert {"metric": "a", "value": 1.0, "unit": "s"} in got  # what came before the kill is kept
    with pytest.raises(MemoryError):
        run_isolated(_memory_error_job)


def test_task_turns_a_killed_worker_into_oom_rows(monkeypatch):
    from harness.tasks import efficiency

    def fake_run_isolated(job, spec, on_item=None):
        on_item({"metric": "train_step_s", "value": 1.0, "unit": "s"})
        raise WorkerDied("measurement worker killed by SIGKILL during prefill", oom=True, stage="prefill")

    monkeypatch.setattr("harness.runtime.isolate.run_isolated", fake_run_isolated)
    rows = efficiency.Efficiency().run(_cell(decode_contexts=[16]))
    status = {(r["metric"], r.get("context_len")): r.get("status", "ok") for r in rows}
    assert status[("train_step_s", None)] == "ok"
    assert status[("prefill_s", None)] == "oom" and status[("decode_token_s", 16)] == "oom"
    assert status[("peak_mem_bytes", None)] == "oom"


# ---------------------------------------------------------------------------------------------
# CPU peak memory


def _alloc_job(mib):
    with PeakMemory("cpu") as pm:
        x = torch.ones(mib * 1024 * 1024 // 4)  # float32, touched
        del x
    yield (pm.bytes, pm.method)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_cpu_peak_memory_grows_with_the_allocation():
    small, method = run_isolated(_alloc_job, 16)[0]
    large, _ = run_isolated(_alloc_job, 64)[0]
    assert method in ("rss_hwm_reset", "rss_lifetime_peak")
    assert 16 * 2**20 * 0.9 < small < 16 * 2**20 * 1.5
    assert 64 * 2**20 * 0.9 < large < 64 * 2**20 * 1.5
    assert large - small > 40 * 2**20


# ---------------------------------------------------------------------------------------------
# the task


def test_efficiency_task_rows_in_an_isolated_worker():
    """Every documented metric, with its unit; decode at every context; rows fit the table."""
    from harness.sweep.run_cell import _check_task_rows

    cell = _cell(decode_fractions=[0.5, 1.0], analytic=True, repeats=3)
    rows = _check_task_rows(Efficiency().run(cell))
    assert all(r["status"] == "ok" for r in rows), rows
    units = {r["metric"]: r["unit"] for r in rows}
    assert units == {
        "train_step_s": "s", "train_tokens_per_s": "tokens/s", "peak_mem_bytes": "bytes",
        "prefill_s": "s", "prefill_tokens_per_s": "tokens/s", "prefill_peak_mem_bytes": "bytes",
        "measured_cache_bytes": "bytes", "decode_token_s": "s",
        # analytic: true
        "mixer_flops_per_token": "FLOP", "model_flops_per_token": "FLOP", "state_bytes": "bytes",
        "kv_cache_bytes": "bytes", "cache_bytes": "bytes", "cache_reduction_vs_transformer": "ratio",
        "n_params": "count", "mixer_flops_per_token_per_layer": "FLOP", "analytic_crossover_len": "tokens",
    }
    decode = sorted(r["context_len"] for r in rows if r["metric"] == "decode_token_s")
    assert decode == [16, 32]
    timed = [r for r in rows if r["metric"] in ("train_step_s", "prefill_s", "decode_token_s")]
    assert all(r["value"] > 0 and r["spread"] >= 0 and r["n_repeats"] >= 2 for r in timed)
    assert all(r["backend"] == "torch" for r in timed)
    # timing provenance: CPU time of one thread by default, both clocks kept
    assert all(r["clock"] == "cpu" and r["threads"] == 1 and r["cpu_time_s"] == r["value"]
               and r["wall_time_s"] > 0 and isinstance(r["loaded"], bool) for r in timed), timed
    by = {r["metric"]: r["value"] for r in rows}
    assert by["peak_mem_bytes"] > 0 and by["prefill_peak_mem_bytes"] >= 0
    # the cache the prefill built holds exactly what the analytic costs say
    assert by["measured_cache_bytes"] == by["cache_bytes"]
    tokens = cell.batch * cell.seq_len  # an odd number of repeats: median(T / t) = T / median(t)
    assert by["train_tokens_per_s"] == pytest.approx(tokens / by["train_step_s"])


def test_check_rejects_long_cpu_cells():
    task = Efficiency()
    task.check(_cell(seq_len=1024, max_tokens_cpu=1024))
    with pytest.raises(ValueError, match="max_tokens_cpu"):
        task.check(_cell(seq_len=2048, max_tokens_cpu=1024))
    with pytest.raises(ValueError, match="max_tokens_cpu"):  # a decode context counts too
        task.check(_cell(seq_len=512, max_tokens_cpu=1024, decode_contexts=[4096]))
    task.check(_cell(seq_len=2048, max_tokens_cpu=1024, device="cuda"))  # the guard is for the CPU


def test_params_validation():
    with pytest.raises(ValueError):
        Efficiency.Params(measure=[])
    with pytest.raises(ValueError):
        Efficiency.Params(measure=["speed"])
    with pytest.raises(ValueError):
        Efficiency.Params(decode_fractions=[0.0])
    assert Efficiency.Params(measure=["decode", "decode"]).measure == ["decode"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("variant,layout,n_layers", [("gated_deltanet", "3:1", 4), ("gla", "1:1", 2),
                                                     ("hgrn", "1:1", 2), ("retnet", "transformer", 2)])
def test_cache_bytes_after_prefill_equal_the_analytic_costs(variant, layout, n_layers, dtype):
    cfg = ModelConfig(variant=variant, layout=layout, **{**TINY, "n_layers": n_layers})
    model = build_model(cfg, "cpu", dtype).eval()
    T, B = 24, 2
    _, cache = model.prefill(torch.randint(0, cfg.vocab_size, (B, T)))
    costs = {r["metric"]: r["value"] for r in model_costs(cfg, T, B, dtype)}
    assert cache.nbytes() == costs["cache_bytes"]
    kv = sum(t.numel() * t.element_size() for k, s in zip(model.kinds, cache.states) if k == "A" for t in s.values())
    assert kv == costs["kv_cache_bytes"]
    assert cache.nbytes() - kv == costs["state_bytes"]


# ---------------------------------------------------------------------------------------------
# crossover


def _table(models: dict, metric="prefill_s", length_col="seq_len", d_model=64) -> pd.DataFrame:
    rows = []
    for (variant, layout), values in models.items():
        for L, v in values.items():
            rows.append({"variant": variant, "layout": layout, "d_model": d_model, "n_layers": 2, "batch": 1,
                         "device": "cpu", "dtype": "float32", "backend": "torch", "metric": metric,
                         "value": v, "status": "ok", "seq_len": L if length_col == "seq_len" else 4096,
                         "context_len": L if length_col == "context_len" else None, "seed": 0})
    return pd.DataFrame(rows)


def test_crossing_rule():
    # ratios 4, 1.25, 0.5 at 1000, 2000, 4000: crosses between 2000 and 4000, log-log interpolation
    status, x, lo, hi = crossing([1000, 2000, 4000], [4.0, 1.25, 0.5])
    assert status == "crossed" and (lo, hi) == (2000, 4000)
    assert x == pytest.approx(2000 * 2 ** (math.log(1.25) / (math.log(1.25) + math.log(2))))
    assert x == pytest.approx(2367.77, abs=0.01)
    # faster, slower, faster: the crossing is the last one (faster from there on)
    assert crossing([1, 2, 4, 8], [0.5, 2.0, 2.0, 0.5])[2:] == (4, 8)
    assert crossing([1, 2], [0.5, 0.9])[0] == "linear_faster_everywhere"
    assert crossing([1, 2], [1.5, 1.1])[0] == "softmax_faster_everywhere"


def test_measured_crossover_on_a_synthetic_table():
    df = _table({
        ("attention", "transformer"): {1000: 1.0, 2000: 4.0, 4000: 16.0},
        ("gla", "pure"): {1000: 4.0, 2000: 5.0, 4000: 8.0},  # ratios 4, 1.25, 0.5
        ("gla", "1:1"): {1000: 2.0, 2000: 4.0, 4000: 12.0},  # ratios 2, 1, 0.75: 1 is not faster
        ("hgrn", "pure"): {1000: 9.0, 2000: 9.0, 4000: 17.0},  # always slower
    })
    df = pd.concat([df, df.assign(value=df["value"] * 100, status="failed")])  # not-ok rows are ignored
    out = measured_crossover(df, "prefill_s").set_index(["variant", "layout"])
    assert out.loc[("gla", "pure"), "status"] == "crossed"
    assert out.loc[("gla", "pure"), "crossover_len"] == pytest.approx(2367.77, abs=0.01)
    assert out.loc[("gla", "pure"), "ratio_at_max"] == pytest.approx(0.5)
    assert out.loc[("gla", "1:1"), "crossover_len"] == pytest.approx(2000 * 2 ** 0.0)  # exactly at 2000 (ratio 1)
    assert out.loc[("hgrn", "pure"), "status"] == "softmax_faster_everywhere"
    assert out.loc[("hgrn", "pure"), "lo_len"] == 4000 and math.isnan(out.loc[("hgrn", "pure"), "crossover_len"])
    # another width is another context: no baseline there, no row
    other = _table({("gla", "pure"): {1000: 1.0}}, d_model=128)
    assert len(measured_crossover(pd.concat([df, other]), "prefill_s")) == 3


def test_decode_ratio_and_decode_crossover_use_context_len():
    df = _table({
        ("attention", "transformer"): {512: 1.0, 1024: 2.0, 2048: 4.0},
        ("gated_deltanet", "pure"): {512: 2.0, 1024: 2.0, 2048: 2.0},
    }, metric="decode_token_s", length_col="context_len")
    r = decode_ratio(df)
    assert list(r["context_len"]) == [2048] and r["softmax_over_linear"].iloc[0] == pytest.approx(2.0)
    c = measured_crossover(df, "decode_token_s")
    assert c["status"].iloc[0] == "crossed" and c["crossover_len"].iloc[0] == pytest.approx(1024)


def test_analytic_crossover_is_the_papers_l_star():
    """The analytic task writes L* as a row (the paper's k d / (2H) = 8 * 2048 / 16 for the 1.3B
    Gated DeltaNet); the crossover table reads it from the table and computes nothing."""
    from harness.model.costs import model_costs

    cfg = ModelConfig(variant="gated_deltanet", layout="pure", n_layers=24, d_model=2048, n_heads=8,
                      vocab_size=32000, mixer_kwargs={"head_dim": 256, "expand_v": 1.0})
    (lstar,) = [r["value"] for r in model_costs(cfg, 4096) if r["metric"] == "analytic_crossover_len"]
    assert lstar == 1024.0
    df = _table({("attention", "transformer"): {1024: 1.0, 4096: 3.0},
                 ("gated_deltanet", "pure"): {1024: 2.0, 4096: 2.0}}, d_model=2048)
    df["n_heads"] = 8
    df = pd.concat([df, df.iloc[[-1]].assign(metric="analytic_crossover_len", value=lstar)], ignore_index=True)
    an = analytic_crossover(df)
    assert an["analytic_crossover_len"].tolist() == [1024.0]
    table = crossover_table(df)
    assert table["analytic_crossover_len"].tolist() == [1024.0]
    assert table["metric"].tolist() == ["prefill_s"]
    assert crossover_table(df[df["metric"] != "analytic_crossover_len"])["analytic_crossover_len"].isna().all()


# ---------------------------------------------------------------------------------------------
# suites


@pytest.mark.parametrize("name", ["cpu-efficiency", "paper-efficiency"])
def test_efficiency_suites_expand(name):
    from harness.sweep import expand_cells, load_suite

    suite = load_suite(ROOT / "suites" / f"{name}.yaml")
    cells = expand_cells(suite, [])
    tasks = {c.task for c in cells}
    assert tasks == {"analytic", "efficiency"}
    eff = [c for c in cells if c.task == "efficiency"]
    assert {c.model["variant"] for c in eff} >= {"attention", "gated_deltanet", "hgrn", "gla"}
    if name == "paper-efficiency":
        assert {c.model["d_model"] for c in cells} == {1024, 2048}
        assert max(c.seq_len for c in cells) == 65536 and min(c.seq_len for c in cells) == 1024
        gdn = next(c for c in cells if c.model["variant"] == "gated_deltanet" and c.model["d_model"] == 2048)
        rows = {r["metric"]: r["value"] for r in model_costs(gdn.model_config(), 4096)}
        assert rows["mixer_flops_per_token_per_layer"] == 4_194_304  # the paper's 8 d^2 / H
