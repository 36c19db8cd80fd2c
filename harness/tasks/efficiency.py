"""`efficiency`: measured speed and memory of one model on one device (docs/metrics.md).

Per cell (variant x layout x seq_len x batch x dtype x device), with random token ids:
- train: forward + backward of the mean next-token cross-entropy over `batch` x `seq_len` tokens,
  model in train mode, gradients set to None before each step, no optimizer step
  -> `train_step_s`, `train_tokens_per_s`;
- prefill: `HybridLM.prefill(last_only=True)` of `seq_len` tokens (no grad, eval mode; it
  returns the last position's logits, as generation needs, and the cache) -> `prefill_s`,
  `prefill_tokens_per_s`, `measured_cache_bytes` (what that cache holds);
- decode: at each context length c, a cache filled by an untimed prefill of c tokens, then
  `decode_warmup` untimed and `decode_steps` timed `decode_step` calls, each timed on its own
  -> `decode_token_s` rows with `context_len = c` (the cache grows by one token per step, so
  the last timed step sees c + decode_warmup + decode_steps - 1 tokens);
- memory: the first timed train step and the first timed prefill (after the warm-up calls) run
  under `harness.runtime.memory.PeakMemory` -> `peak_mem_bytes` (train step) and
  `prefill_peak_mem_bytes`: peak bytes above what the process held just before the call (the
  built model, and on CPU nothing else). Without the matching timing, one call after the warm-up.
Times are the median of `repeats` (decode: `decode_steps`) timed calls after `warmup` untimed ones;
`spread` is their interquartile range. Which clock (harness.runtime.timing): on CPU the measurement runs
with one torch thread by default and reports CPU time (`clock: auto`), because wall time on a
shared machine was seen 5-30x inflated by other work while 1-thread CPU time stayed stable; on
CUDA, synchronised wall time. Every timed row records `clock`, `wall_time_s`, `cpu_time_s` (CPU),
`threads`, and `loaded` (CPU: the two clocks disagreed by more than 20%, i.e. the process
waited for a core and the wall time is not to be trusted).

On CPU the whole measurement runs in an isolated worker process (`isolate: auto`), so that its
peak resident set size is its own and an out-of-memory kill ends the worker, not the sweep. On
CUDA it runs in-process with torch's peak-memory statistics. An out-of-memory error in one stage
gives that stage's rows with status "oom" and the other stages still run; a worker killed by
SIGKILL gives "oom" rows for everything it had not reported.

The analytic costs (harness.model.costs.model_costs) come from the `analytic` task; suites run both
tasks. Set `analytic: true` to have an efficiency cell carry them as well (then do not also run
the `analytic` task on the same cells, or the table holds those rows twice).

The crossover lengths where linear layers overtake softmax are computed from the table by
`harness.report.crossover` (no rows are written for them).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import field_validator

from harness.registry import register_task
from harness.tasks.base import PRIOR_FLOPS, Task, forward_flops, metric_row
from harness.tasks.measuring import (
    MeasureParams,
    check_measurement,
    measure_spec,
    run_job,
    stage_list,
    torch_threads,
)

if TYPE_CHECKING:
    from harness.sweep.cell import Cell

MEASURES = ("train", "prefill", "decode", "memory")

#: the metrics of each timed stage, in the order they are produced: time, throughput (units and
#: meanings: harness.metrics)
STAGE_METRICS: dict[str, list[str]] = {
    "train": ["train_step_s", "train_tokens_per_s"],
    "prefill": ["prefill_s", "prefill_tokens_per_s", "measured_cache_bytes"],
    "decode": ["decode_token_s"],
}
#: the peak-memory metric of each stage
MEMORY_METRIC = {"train": "peak_mem_bytes", "prefill": "prefill_peak_mem_bytes"}


@register_task("efficiency")
class Efficiency(Task):
    class Params(MeasureParams):
        #: what to measure: any of train, prefill, decode, memory
        measure: stage_list(MEASURES) = list(MEASURES)  # type: ignore[valid-type]
        #: decode context lengths; None: `decode_fractions` of seq_len
        decode_contexts: list[int] | None = None
        #: fractions of seq_len used when decode_contexts is None
        decode_fractions: list[float] = [0.125, 0.25, 0.5, 1.0]
        #: also emit the analytic cost rows of harness.model.costs.model_costs
        analytic: bool = False
        #: decode through torch.compile (HybridLM.decode_fn): per-token cost without eager
        #: per-op overhead; compiling costs ~15-30 s per cell on the CPU (untimed)
        compile_decode: bool = False

        @field_validator("decode_contexts")
        @classmethod
        def _positive(cls, v: list[int] | None) -> list[int] | None:
            if v is not None and (not v or any(c < 1 for c in v)):
                raise ValueError("decode_contexts must be a non-empty list of positive lengths")
            return v

        @field_validator("decode_fractions")
        @classmethod
        def _fractions(cls, v: list[float]) -> list[float]:
            if not v or any(not 0 < f <= 1 for f in v):
                raise ValueError("decode_fractions must be a non-empty list of numbers in (0, 1]")
            return v

    def expected_seconds(self, cell: Cell) -> float:
        p = self.params(cell)
        calls = p.warmup + p.repeats
        work = forward_flops(cell, cell.batch * cell.seq_len) * calls * (
            ("train" in p.measure) * 3 + ("prefill" in p.measure) + ("decode" in p.measure))
        return 1.0 + work / PRIOR_FLOPS  # + starting the isolated worker

    def check(self, cell: Cell) -> None:
        p = self.params(cell)
        contexts = decode_contexts(p, cell.seq_len) if "decode" in p.measure else []
        check_measurement(p, cell.device, cell.batch, max([cell.seq_len] + contexts))

    def run(self, cell: Cell) -> list[dict[str, Any]]:
        import torch

        p = self.params(cell)
        spec = make_spec(cell, p, torch.get_num_threads())
        rows: list[dict[str, Any]] = []
        if p.analytic:
            from harness.model.costs import model_costs

            rows += model_costs(cell.model_config(), cell.seq_len, cell.batch, cell.torch_dtype())
        return rows + run_job(measure_job, spec, p.isolate, cell.device, planned(spec))


# ---------------------------------------------------------------------------------------------
# The measurement (a plain function of a picklable spec, so it can run in a worker process)


def decode_contexts(p: Efficiency.Params, seq_len: int) -> list[int]:
    if p.decode_contexts is not None:
        return sorted(set(p.decode_contexts))
    return sorted({max(1, round(f * seq_len)) for f in p.decode_fractions})


def make_spec(cell: Cell, p: Efficiency.Params, threads: int | None = None) -> dict[str, Any]:
    return {**measure_spec(cell, p, threads), "contexts": decode_contexts(p, cell.seq_len)}


def planned(spec: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    """(stage, metric, context_len) of every row the spec will produce."""
    measure = spec["params"]["measure"]
    out: list[tuple[str, str, int | None]] = []
    for stage in ("train", "prefill"):
        if stage in measure:
            out += [(stage, m, None) for m in STAGE_METRICS[stage]]
    if "decode" in measure:
        out += [("decode", STAGE_METRICS["decode"][0], c) for c in spec["contexts"]]
    if "memory" in measure:
        out += [(stage, m, None) for stage, m in MEMORY_METRIC.items()]
    return out





def measure_job(spec: dict[str, Any]) -> Iterator[Any]:
    """Build the model and measure it; yields ("stage", name) markers and row dicts. Runs with
    `spec["threads"]` torch threads, restoring the process's setting at the end."""
    with torch_threads(spec.get("threads")):
        yield from _measure(spec)


class _ModelBench:
    """One cell's model, its random tokens and its measuring context (device, clock, threads)."""

    def __init__(self, spec: dict[str, Any]):
        import torch

        from harness.model.config import ModelConfig
        from harness.model.lm import build_model
        from harness.runtime.timing import device_sync

        self.p, self.device = spec["params"], spec["device"]
        torch.manual_seed(spec["seed"])
        cfg = ModelConfig.from_dict(spec["model"])
        self.model = build_model(cfg, self.device, getattr(torch, spec["dtype"]), spec["backend"])
        self.backend = self.model.backend  # what "auto" resolved to (harness.runtime.devices.resolve_backend)
        self.B, self.L, self.V = spec["batch"], spec["seq_len"], cfg.vocab_size
        self.gen = torch.Generator(device="cpu").manual_seed(spec["seed"])
        self.tokens, self.targets = self.rand_tokens(self.L), self.rand_tokens(self.L)
        self.sync, self.measure, self.clock = device_sync(self.device), self.p["measure"], spec.get("clock", "wall")
        self.threads, self.on_cpu = spec.get("threads") or torch.get_num_threads(), self.device == "cpu"
        self.cache: Any = None  # the last prefill's

    def rand_tokens(self, n: int) -> Any:
        import torch

        return torch.randint(0, self.V, (self.B, n), generator=self.gen).to(self.device)

    def row(self, metric: str, value: Any, **kw: Any) -> dict[str, Any]:
        r = metric_row(metric, value, **kw)
        r["backend"] = self.backend
        return r

    def oom_rows(self, stage: str, msg: str, contexts: list[int] | None = None,
                 memory: bool = False, timed: bool = False) -> list[dict[str, Any]]:
        if stage == "decode":
            return [self.row("decode_token_s", None, context_len=c, status="oom", error=msg) for c in contexts or []]
        metrics = (STAGE_METRICS[stage] if timed else []) + ([MEMORY_METRIC[stage]] if memory else [])
        return [self.row(m, None, status="oom", error=msg) for m in metrics]

    def train_step(self) -> None:
        import torch.nn.functional as F

        self.model.zero_grad(set_to_none=True)
        logits = self.model(self.tokens)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), self.targets.flatten())
        loss.backward()

    def prefill(self) -> None:
        self.cache = None  # free the previous cache first
        _, self.cache = self.model.prefill(self.tokens, last_only=True)

    def forget(self, error: str | None = None) -> None:
        """Drop the cache and gradients (and, after an out-of-memory error, the device's cache)."""
        from harness.runtime.devices import free_device_memory

        self.cache = None
        self.model.zero_grad(set_to_none=True)
        if error is not None:
            free_device_memory(self.device)


def _measure(spec: dict[str, Any]) -> Iterator[Any]:
    bench = _ModelBench(spec)
    measure, memory = bench.measure, "memory" in bench.measure
    if "train" in measure or memory:
        yield from _stage_rows(bench, "train", bench.train_step, "train" in measure, memory, True)
    if "prefill" in measure or memory:
        yield from _stage_rows(bench, "prefill", bench.prefill, "prefill" in measure, memory, False)
    if "decode" in measure:
        yield ("stage", "decode")
        yield from _decode_rows(bench, list(spec["contexts"]))
    bench.cache = None


def _stage_rows(bench: _ModelBench, name: str, fn: Any, timed: bool, memory: bool, train: bool) -> Iterator[Any]:
    """Timings; peak memory of the first timed call (after `warmup` calls, so steady state)."""
    from harness.runtime.devices import is_oom
    from harness.runtime.memory import PeakMemory
    from harness.runtime.timing import time_calls

    p = bench.p
    yield ("stage", name)
    bench.model.train(train)
    pm = PeakMemory(bench.device) if memory else None
    out: list[dict[str, Any]] = []
    error = None
    try:
        if timed:
            t = time_calls(fn, p["warmup"], p["repeats"], bench.sync, around_first=(lambda: pm) if pm else None,
                           clock=bench.clock)
            rate, rate_iqr = t.rate(bench.B * bench.L)
            timing = t.provenance(bench.threads, bench.on_cpu)
            time_metric, rate_metric, *_ = STAGE_METRICS[name]
            out.append(bench.row(time_metric, t.median, spread=t.spread, n_repeats=t.n, **timing))
            out.append(bench.row(rate_metric, rate, spread=rate_iqr, n_repeats=t.n, **timing))
            if not train:
                out.append(bench.row("measured_cache_bytes", bench.cache.nbytes()))
        elif pm is not None:
            for _ in range(p["warmup"]):
                fn()
            with pm:
                fn()
    except Exception as exc:
        if not is_oom(exc):
            raise
        error = f"{type(exc).__name__}: {exc}"[:2000]
    # outside the except block: its traceback no longer pins the failed call's tensors
    if pm is not None and pm.bytes is not None:
        out.append(bench.row(MEMORY_METRIC[name], pm.bytes, n_repeats=1))
    if error is not None:
        bench.forget(error)
        done = {r["metric"] for r in out}
        out += [r for r in bench.oom_rows(name, error, memory=memory, timed=timed) if r["metric"] not in done]
    yield from out
    bench.model.zero_grad(set_to_none=True)


def _decode_rows(bench: _ModelBench, contexts: list[int]) -> Iterator[Any]:
    """A decode step's time after each context length; out of memory at one: "oom" for the rest."""
    import torch

    from harness.runtime.devices import free_device_memory, is_oom
    from harness.runtime.timing import time_calls

    p, model = bench.p, bench.model
    model.eval()
    step_token = bench.rand_tokens(1)[:, 0]
    compiled = bool(p.get("compile_decode"))
    decode = model.decode_fn(compile=compiled)
    # a compiled step compiles on its first call and recompiles once when the KV cache
    # grows (dynamic shapes): two untimed steps at least, so neither is timed
    decode_warmup = max(p["decode_warmup"], 2) if compiled else p["decode_warmup"]
    for i, c in enumerate(contexts):
        error = None
        try:
            if c == bench.L and bench.cache is not None:
                cache = bench.cache  # the last prefill's cache: exactly L tokens
            else:
                bench.cache = None
                with torch.no_grad():
                    _, cache = model.prefill(bench.rand_tokens(c), last_only=True)
            bench.cache = None
            t = time_calls(lambda cache=cache: decode(step_token, cache), decode_warmup, p["decode_steps"], bench.sync,
                           clock=bench.clock)
        except Exception as exc:
            if not is_oom(exc):
                raise
            error = f"{type(exc).__name__}: {exc}"[:2000]
        cache = None
        if error is not None:
            bench.cache = None
            free_device_memory(bench.device)
            # longer contexts need more: report them all as out of memory
            yield from bench.oom_rows("decode", error, contexts=contexts[i:])
            return
        yield bench.row("decode_token_s", t.median, context_len=c, spread=t.spread, n_repeats=t.n,
                        **t.provenance(bench.threads, bench.on_cpu))
