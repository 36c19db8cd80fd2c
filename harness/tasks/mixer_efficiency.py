"""`mixer_efficiency`: one token-mixer layer alone, and its op, across sequence length.

The measured twin of the paper's Table 7 / Fig. 4 (which count FLOPs of one mixer layer), and
comparable with flash-linear-attention's `benchmarks/ops`. A cell is one layer: the task sets
n_layers to 1, so `layout: pure` is the variant's mixer and `layout: transformer` softmax
attention (other layouts are not one layer and are refused). Inputs are random hidden states
x [batch, seq_len, d_model] (and random upstream gradients' stand-in: the mean square output).

Layer rows (the `Mixer` module: projections, short convs, op, norm, output projection; the
cell's backend; `mode` picks chunk or the step-by-step recurrence):
- `mixer_fwd_s`: forward, no grad, eval mode (a prefill without the cache's use);
- `mixer_fwd_bwd_s`: forward + backward of mean(y^2) into x and every parameter;
- `mixer_fwd_bwd_peak_bytes`: peak memory of the first timed forward + backward (as in
  harness.runtime.memory.PeakMemory: above what was held before; the inputs and weights are held);
- `mixer_decode_step_s`: one single-token step at a context of seq_len tokens (the state of
  an untimed forward over seq_len tokens; every timed step starts from that same state, so the
  context stays seq_len; attention's KV cache then holds seq_len tokens).

Op rows (`op_fwd_s`, `op_fwd_bwd_s`, `op_fwd_bwd_peak_bytes`), one per implementation in the
row's `subtask`, all on the same inputs: the tensors the layer itself passes to its op (captured
from one untimed forward), so shapes, gates and scales are the layer's own:
- `harness`: our chunked op (harness.ops, torch backend);
- `sdpa`: torch's scaled_dot_product_attention, causal, on the same q, k and v ([B, H, T, D];
  v cut to the key head dim so that the fused kernels apply; HGRN has no q/k: x split into the
  cell's n_heads heads serves as q, k and v). For the Transformer cell (layout transformer) this
  is its own attention op, on random q, k, v of its shape;
- `fla_naive`: fla's pure-PyTorch reference (harness.integrations.fla_references), where fla is installed;
  the step-loop ones (per-channel GLA, HGRN) only up to `naive_stepwise_max_len`;
- `fla`: fla's Triton kernel through our fla backend, on CUDA where fla is installed.
An implementation that is not available here gives no rows (not a failure).

With `mode: recurrent` the layer runs its step-by-step path and its rows carry subtask
`recurrent` (so that no table averages them with the chunked ones); the op rows are our
step-by-step op only (subtask `recurrent`): the baselines do not depend on the mode.

Timing, clocks, threads, isolation and out-of-memory handling are the `efficiency` task's
(harness.tasks.efficiency, docs/metrics.md): CPU time of a 1-thread measurement on CPU by
default, synchronised wall time on CUDA, an isolated worker on CPU.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field

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

STAGES = ("forward", "train", "decode", "memory")
IMPLS = ("harness", "sdpa", "fla_naive", "fla")
#: the metric of each layer stage (units and meanings: harness.metrics)
LAYER_METRICS = {"forward": "mixer_fwd_s", "train": "mixer_fwd_bwd_s", "decode": "mixer_decode_step_s",
                 "memory": "mixer_fwd_bwd_peak_bytes"}
#: the metric of each op stage (no decode: a step op is the layer's decode path)
OP_METRICS = {"forward": "op_fwd_s", "train": "op_fwd_bwd_s", "memory": "op_fwd_bwd_peak_bytes"}
LAYOUTS = ("pure", "transformer")


def _each_once(v: list[str]) -> list[str]:
    return list(dict.fromkeys(v))


@register_task("mixer_efficiency")
class MixerEfficiency(Task):
    class Params(MeasureParams):
        #: what to measure: any of forward, train (forward + backward), decode, memory
        measure: stage_list(STAGES) = list(STAGES)  # type: ignore[valid-type]
        #: op-level implementations timed beside the layer (those not available are skipped)
        impls: Annotated[list[Literal[IMPLS]], AfterValidator(_each_once)] = list(IMPLS)  # type: ignore[valid-type]
        #: the layer's and our op's path: chunk (parallel) or recurrent (step by step; rows
        #: tagged subtask "recurrent", baselines not repeated)
        mode: Literal["chunk", "recurrent"] = "chunk"
        #: fla references that loop token by token are measured up to this length
        naive_stepwise_max_len: int = Field(2048, ge=1)


    @classmethod
    def model_from_params(cls, params: dict[str, Any]) -> dict[str, Any] | None:
        return {"n_layers": 1}  # one mixer layer: layout pure (the variant) or transformer

    def expected_seconds(self, cell: Cell) -> float:
        p = self.params(cell)
        work = forward_flops(cell, cell.batch * cell.seq_len) * (p.warmup + p.repeats) * (
            len(p.measure) + 3 * len(p.impls))
        return 1.0 + work / PRIOR_FLOPS

    def check(self, cell: Cell) -> None:
        if cell.model["layout"] not in LAYOUTS:
            raise ValueError(f"mixer_efficiency measures one layer: layout must be 'pure' (the variant's "
                             f"mixer) or 'transformer' (softmax attention), not {cell.model['layout']!r}")
        p = self.params(cell)
        check_measurement(p, cell.device, cell.batch, cell.seq_len + (1 if "decode" in p.measure else 0))

    def run(self, cell: Cell) -> list[dict[str, Any]]:
        import torch

        p = self.params(cell)
        spec = measure_spec(cell, p, torch.get_num_threads())
        rows = []
        if cell.model["layout"] == "pure":  # the paper's L* beside the measured crossover (costs nothing)
            from harness.model.costs import crossover_length

            rows.append(metric_row("analytic_crossover_len", crossover_length(cell.model_config())))
        return rows + run_job(mixer_job, spec, p.isolate, cell.device, planned(spec))


def planned(spec: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    """The layer rows a spec will produce (for the failure rows of a worker that died)."""
    return [(stage, m, None) for stage, m in LAYER_METRICS.items() if stage in spec["params"]["measure"]]


def mixer_job(spec: dict[str, Any]) -> Iterator[Any]:
    with torch_threads(spec.get("threads")):
        yield from _measure(spec)


# ---------------------------------------------------------------------------------------------
# The measurement


def _capture_op_call(mixer: Any) -> dict[str, Any]:
    """Make `mixer.op(...)` record the family and arguments of its next call."""
    seen: dict[str, Any] = {}
    resolve = type(mixer).op

    def op(family: str, mode: str | None, seq_len: int | None = None) -> Callable:
        fn = resolve(mixer, family, mode, seq_len)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            seen.setdefault("call", (family, args, kwargs))
            return fn(*args, **kwargs)

        return recorded

    mixer.op = op
    return seen


def _sdpa_inputs(family: str, kw: dict[str, Any], n_heads: int) -> tuple[Any, Any, Any]:
    """q, k, v [B, H, T, D] for the softmax baseline on the op's own tensors. v is cut to the
    key head dim: torch's fused attention kernels need equal head dims, and with unequal ones
    CPU SDPA falls back to the math kernel that materialises T x T (several times slower at long
    lengths), which would time a kernel limitation, not softmax attention."""
    if family == "hgrn":
        x = kw["x"]  # [B, T, D]: split into heads
        x = x.unflatten(-1, (n_heads, -1)).transpose(1, 2)  # [B, H, T, D / H]
        return x, x, x
    q, k, v = (kw[n].transpose(1, 2) for n in ("q", "k", "v"))  # [B, T, H, D] -> [B, H, T, D]
    return q, k, v[..., : k.shape[-1]]


class _Bench:
    """One cell's measuring context: device, clock, threads, what to measure, and its rows."""

    def __init__(self, spec: dict[str, Any], backend: str):
        import torch

        from harness.runtime.timing import device_sync

        self.p, self.device, self.backend = spec["params"], spec["device"], backend
        self.measure = self.p["measure"]
        self.sync, self.clock = device_sync(self.device), spec.get("clock", "wall")
        self.threads, self.on_cpu = spec.get("threads") or torch.get_num_threads(), self.device == "cpu"

    def row(self, metric: str, value: Any, impl: str | None = None, **kw: Any) -> dict[str, Any]:
        r = metric_row(metric, value, subtask=impl, **kw)
        r["backend"] = self.backend if metric.startswith("mixer_") or impl == "fla" else "torch"  # layer: the cell's
        return r

    def timed(self, metrics: dict[str, str], impl: str | None, fwd: Callable, fwd_bwd: Callable,
              decode: Callable | None = None) -> Iterator[dict[str, Any]]:
        """Rows of one implementation; an out-of-memory error gives "oom" rows for the rest."""
        from harness.runtime.memory import PeakMemory

        plan = [("forward", fwd), ("train", fwd_bwd), ("decode", decode)]
        for i, (stage, fn) in enumerate(plan):
            if fn is None or (stage not in self.measure and not (stage == "train" and "memory" in self.measure)):
                continue
            pm = PeakMemory(self.device) if stage == "train" and "memory" in self.measure else None
            t, error = self._time(stage, fn, pm)
            if error is not None:
                yield from self._oom_rows(metrics, impl, [s for s, f in plan[i:] if f is not None], stage, error)
                return
            if stage in self.measure:
                yield self.row(metrics[stage], t.median, impl, spread=t.spread, n_repeats=t.n,
                               **t.provenance(self.threads, self.on_cpu))
            if pm is not None and pm.bytes is not None:
                yield self.row(metrics["memory"], pm.bytes, impl, n_repeats=1)

    def _time(self, stage: str, fn: Callable, pm: Any) -> tuple[Any, str | None]:
        """(the timing, None), or (None, the error) when the device ran out of memory."""
        from harness.runtime.devices import is_oom
        from harness.runtime.timing import time_calls

        p = self.p
        try:
            if stage == "decode":
                return time_calls(fn, p["decode_warmup"], p["decode_steps"], self.sync, clock=self.clock), None
            return time_calls(fn, p["warmup"], p["repeats"], self.sync, clock=self.clock,
                              around_first=(lambda: pm) if pm else None), None
        except Exception as exc:
            if not is_oom(exc):
                raise
            return None, f"{type(exc).__name__}: {exc}"[:2000]

    def _oom_rows(self, metrics: dict[str, str], impl: str | None, stages: list[str], stage: str,
                  error: str) -> Iterator[dict[str, Any]]:
        """"oom" rows for `stages` (from the one that failed on) and the memory row they owe."""
        from harness.runtime.devices import free_device_memory

        free_device_memory(self.device)
        memory_pending = "memory" in self.measure and stage != "decode"  # reported with train
        later = [s for s in stages if s in self.measure] + (["memory"] if memory_pending else [])
        for s in dict.fromkeys(later):
            if s in metrics:
                yield self.row(metrics[s], None, impl, status="oom", error=error)

    def op_rows(self, impl: str, call: Callable[..., Any], inputs: dict[str, Any]) -> Iterator[Any]:
        """An op's forward and forward + backward on `inputs` (grads taken w.r.t. float tensors)."""
        import torch

        grads = {k: (v.detach().requires_grad_(True) if torch.is_tensor(v) and v.is_floating_point() else v)
                 for k, v in inputs.items()}

        def fwd() -> None:
            with torch.no_grad():
                call(**inputs)

        def fwd_bwd() -> None:
            for v in grads.values():
                if torch.is_tensor(v):
                    v.grad = None
            out = call(**grads)
            out = out[0] if isinstance(out, tuple) else out
            out.float().pow(2).mean().backward()

        yield ("stage", f"op:{impl}")
        yield from self.timed(OP_METRICS, impl, fwd, fwd_bwd)


def _measure(spec: dict[str, Any]) -> Iterator[Any]:
    import torch

    from harness.model.config import ModelConfig
    from harness.model.lm import build_model

    torch.manual_seed(spec["seed"])
    dtype = getattr(torch, spec["dtype"])
    cfg = ModelConfig.from_dict(spec["model"])
    model = build_model(cfg, spec["device"], dtype, spec["backend"])  # one layer; we use its mixer
    bench, mixer = _Bench(spec, model.backend), model.layers[0].mixer
    del model
    x = torch.randn(spec["batch"], spec["seq_len"], cfg.d_model, device=spec["device"], dtype=dtype)
    seen = yield from _layer_rows(bench, mixer, x, spec["seq_len"])
    yield from _op_rows(bench, spec, cfg, mixer, seen)


def _layer_rows(bench: _Bench, mixer: Any, x: Any, L: int) -> Iterator[Any]:
    """The layer's forward, forward + backward and decode step; returns the op call it captured."""
    import torch

    mode = bench.p["mode"]
    yield ("stage", "layer")
    seen = _capture_op_call(mixer)
    mixer.eval()
    with torch.no_grad():
        _, state = mixer(x, mode=mode)  # also captures the op call
    x_req = x.detach().requires_grad_(True)

    def layer_fwd() -> None:
        with torch.no_grad():
            mixer(x, mode=mode)

    def layer_fwd_bwd() -> None:
        mixer.zero_grad(set_to_none=True)
        x_req.grad = None
        y, _ = mixer(x_req, mode=mode)
        y.float().pow(2).mean().backward()

    x1 = torch.randn(x.shape[0], 1, x.shape[-1], device=x.device, dtype=x.dtype)

    def layer_decode() -> None:
        with torch.no_grad():
            mixer(x1, state, offset=L, mode="recurrent")

    # the step-by-step path is tagged, so that tables never average it with the chunked one
    tag = None if mode == "chunk" else "recurrent"
    yield from bench.timed(LAYER_METRICS, tag, layer_fwd, layer_fwd_bwd, layer_decode)
    mixer.zero_grad(set_to_none=True)
    return seen


def _op_rows(bench: _Bench, spec: dict[str, Any], cfg: Any, mixer: Any, seen: dict[str, Any]) -> Iterator[Any]:
    """The op the layer called, and its baselines (SDPA, fla's naive reference, fla's kernel) on
    the same inputs."""
    import torch
    import torch.nn.functional as F

    from harness.integrations.fla_references import fla_reference, op_kwargs
    from harness.ops.dispatch import get_op

    p, impls, mode, device = bench.p, bench.p["impls"], bench.p["mode"], bench.device
    B, L = spec["batch"], spec["seq_len"]

    def sdpa(q: Any, k: Any, v: Any) -> Any:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    if spec["model"]["variant"] == "attention" or cfg.layout == "transformer":  # its op is attention itself
        if "sdpa" in impls:
            shape = (B, mixer.n_heads, L, mixer.head_dim)
            qkv = {n: torch.randn(shape, device=device, dtype=getattr(torch, spec["dtype"])) for n in ("q", "k", "v")}
            yield from bench.op_rows("sdpa", sdpa, qkv)
        return
    if "call" not in seen:
        return
    family, args, kwargs = seen["call"]
    kw = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in op_kwargs(family, args, kwargs).items()}
    kw.pop("initial_state", None)
    if mode == "recurrent":  # the baselines do not depend on our path: measured in chunk mode
        if "harness" in impls:
            yield from bench.op_rows("recurrent", get_op(family, "recurrent", "torch"), kw)
        return
    if "harness" in impls:
        yield from bench.op_rows("harness", get_op(family, mode, "torch"), kw)
    if "sdpa" in impls:
        q, k, v = _sdpa_inputs(family, kw, cfg.n_heads)
        yield from bench.op_rows("sdpa", sdpa, {"q": q, "k": k, "v": v})
    if "fla_naive" in impls:
        ref = fla_reference(family, kw)
        if ref is not None and (not ref.stepwise or L <= p["naive_stepwise_max_len"]):
            yield from bench.op_rows("fla_naive", ref.fn, kw)
    if "fla" in impls and device.startswith("cuda"):
        from harness.integrations.fla_kernels import fla_installed, register_fla_ops

        if fla_installed():
            register_fla_ops()
            yield from bench.op_rows("fla", get_op(family, "chunk", "fla"), kw)
