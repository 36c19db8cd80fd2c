"""The metric catalogue: every metric a task writes, with its unit, label, direction and length
axis, defined once.

Tasks take units from here (`harness.tasks.base.metric_row` refuses a metric that is not
catalogued, or a unit that disagrees), the report takes labels, directions ("best" means the
highest recall but the lowest loss) and x axes from here, the crossover reads its time metrics
from here, and docs/metrics.md is checked against it (tests/test_metrics.py). A plug-in task
registers its own metrics with `register_metric`.

lm-evaluation-harness rows are a family, ``lm_eval/<task>/<metric>[/<filter>]``: the unit and
direction come from the lm-eval metric's name (`LM_EVAL_METRICS`, lm-eval's own
higher-is-better table for the metrics our tasks use; an unknown lm-eval metric has unit
"score" and no direction, so it is reported but never averaged or ranked).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["Metric", "register_metric", "get_metric", "lookup", "catalogue", "names", "x_axis",
           "higher_is_better", "time_metrics", "LM_EVAL_PREFIX", "lm_eval_base", "UnknownMetricError"]

#: the x axis of a metric measured against a length: the cell's `seq_len`, or the row's
#: `context_len` (decode context, evaluation length), falling back to seq_len where it is empty
X_AXES = ("seq_len", "context_len")
KINDS = ("analytic", "crossover", "time", "throughput", "memory", "accuracy", "reference", "training", "lm")


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    label: str  # what a figure's axis or a table's header says
    #: True: higher is better (accuracy, throughput); False: lower is better (times, bytes,
    #: losses); None: neither (a reference level, a count)
    higher_is_better: Optional[bool]
    kind: str
    tasks: tuple[str, ...]
    description: str
    x_axis: str = "seq_len"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.x_axis not in X_AXES:
            raise ValueError(f"metric {self.name!r}: x_axis {self.x_axis!r} is not one of {X_AXES}")


class UnknownMetricError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


_CATALOGUE: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add a metric (a plug-in task's); registering the same definition again is a no-op."""
    old = _CATALOGUE.get(metric.name)
    if old is not None and old != metric:
        raise ValueError(f"metric {metric.name!r} is already catalogued differently: {old}")
    _CATALOGUE[metric.name] = metric
    return metric


def _m(name: str, unit: str, label: str, better: Optional[bool], kind: str, tasks: str, description: str,
       x_axis: str = "seq_len") -> None:
    register_metric(Metric(name, unit, label, better, kind, tuple(tasks.split()), description, x_axis))


# --- analytic costs (task `analytic`; `efficiency` with analytic: true) --------------------------
_m("mixer_flops_per_token_per_layer", "FLOP", "token-mixer FLOPs per token per layer", False, "analytic",
   "analytic efficiency", "forward token-mixing FLOPs per token of one layer: the linear variant's (the "
   "paper's Table 7), or softmax's for a Transformer")
_m("mixer_flops_per_token", "FLOP", "token-mixer FLOPs per token (whole model)", False, "analytic",
   "analytic efficiency", "the same summed over all layers of the model (linear and softmax layers)")
_m("model_flops_per_token", "FLOP", "model FLOPs per token", False, "analytic", "analytic efficiency",
   "`mixer_flops_per_token` plus every projection, gate, MLP and the LM head")
_m("state_bytes", "bytes", "recurrent state", False, "analytic", "analytic efficiency",
   "what the linear layers' cache holds: recurrent states (fp32 whatever the dtype) and short-convolution "
   "tails, summed over layers, for `batch` sequences")
_m("kv_cache_bytes", "bytes", "KV cache", False, "analytic", "analytic efficiency",
   "the full-attention layers' K and V after L tokens: N_full · 2 · L · n_kv_heads · d_head · bytes per "
   "element · batch")
_m("cache_bytes", "bytes", "inference cache (state + KV)", False, "analytic", "analytic efficiency",
   "total decode cache: `state_bytes + kv_cache_bytes`")
_m("cache_reduction_vs_transformer", "ratio", "cache reduction vs Transformer", True, "analytic",
   "analytic efficiency", "the Transformer's `cache_bytes` at the same shape, L, batch and dtype divided by "
   "this model's")
_m("n_params", "count", "parameters", None, "analytic", "analytic efficiency", "parameters")
_m("analytic_crossover_len", "tokens", "analytic crossover length L*", None, "crossover",
   "analytic efficiency mixer_efficiency",
   "the length where one linear mixer's forward FLOPs per token equal one softmax mixer's: (linear mixer "
   "FLOPs per token) / (2 · d_model); the paper's k · d_model / (2H) (linear models only)")

# --- measured, whole model (task `efficiency`) -----------------------------------------------------
_m("train_step_s", "s", "training step time", False, "time", "efficiency",
   "one training step: forward + backward of the mean next-token cross-entropy (fp32 logits) over B × L "
   "tokens, model in train mode, gradients set to None before each step, **no optimizer step**")
_m("train_tokens_per_s", "tokens/s", "training throughput", True, "throughput", "efficiency",
   "B · L / step time, per repeat; median and IQR of those")
_m("prefill_s", "s", "prefill time", False, "time", "efficiency",
   "`HybridLM.prefill` of B × L tokens: no grad, eval mode, the parallel (chunk) path; it computes the last "
   "position's logits (as generation needs; not a [L, vocab] head) and returns the decode cache")
_m("prefill_tokens_per_s", "tokens/s", "prefill throughput", True, "throughput", "efficiency",
   "B · L / prefill time, per repeat")
_m("measured_cache_bytes", "bytes", "measured inference cache", False, "memory", "efficiency",
   "bytes held by the tensors of the cache that prefill returned (`Cache.nbytes()`); equals the analytic "
   "`cache_bytes` (tested)")
_m("decode_token_s", "s", "decode time per token", False, "time", "efficiency",
   "one `decode_step` (one new token per sequence, the recurrent path, KV cache grows by one) from a cache "
   "of `context_len` tokens; one row per context length", x_axis="context_len")
_m("peak_mem_bytes", "bytes", "peak memory", False, "memory", "efficiency",
   "peak memory of one training step above what was held before it (the built model)")
_m("prefill_peak_mem_bytes", "bytes", "prefill peak memory", False, "memory", "efficiency",
   "peak memory of one prefill of L tokens (including the logits and the cache it returns) above what was "
   "held before it")

# --- measured, one mixer layer and its op (task `mixer_efficiency`) ------------------------------
_m("mixer_fwd_bwd_s", "s", "one mixer layer, forward + backward", False, "time", "mixer_efficiency",
   "forward + backward of mean(y²) into x and every parameter")
_m("mixer_fwd_s", "s", "one mixer layer, forward", False, "time", "mixer_efficiency",
   "the layer's forward, no grad, eval mode")
_m("mixer_decode_step_s", "s", "one mixer layer, decode step at context seq_len", False, "time",
   "mixer_efficiency", "one single-token step at a context of seq_len tokens (every timed step starts from "
   "the state of an untimed forward over seq_len tokens, so the context stays seq_len)")
_m("mixer_fwd_bwd_peak_bytes", "bytes", "one mixer layer, forward + backward peak memory", False, "memory",
   "mixer_efficiency", "peak memory of the first timed forward + backward (as `peak_mem_bytes`)")
_m("op_fwd_bwd_s", "s", "the mixer's op alone, forward + backward", False, "time", "mixer_efficiency",
   "the op alone, forward + backward, on the tensors the layer passes to it (captured from one untimed "
   "forward: the layer's own shapes, gates and scales)")
_m("op_fwd_s", "s", "the mixer's op alone, forward", False, "time", "mixer_efficiency",
   "the op alone, forward, on the same tensors")
_m("op_fwd_bwd_peak_bytes", "bytes", "the mixer's op alone, forward + backward peak memory", False, "memory",
   "mixer_efficiency", "the op's forward + backward peak memory")

# --- accuracy (tasks `mqar`, `niah`, `lm`) ---------------------------------------------------------
_m("recall_acc", "fraction", "recall accuracy", True, "accuracy", "mqar niah",
   "exact-match accuracy of the answers on fixed held-out sequences; `subtask` = `mqar` or "
   "`niah_<single/multikey/multiquery/multivalue>`, `context_len` = the evaluation length (a model trained "
   "at `seq_len` can be scored at several `eval_lengths`)", x_axis="context_len")
_m("recall_chance", "fraction", "recall by uninformed chance", None, "reference", "mqar niah",
   "beside every `recall_acc` row (same subtask, context_len): the score of a uniform guess over the value "
   "tokens (MQAR 1/(vocab/2); NIAH (1/n_value_tokens)^value_len)", x_axis="context_len")
_m("recall_plateau", "fraction", "recall plateau (copy a context value)", None, "reference", "mqar niah",
   "the score of a model that copies a value from the context without binding it to its key (MQAR "
   "1/num_kv_pairs; NIAH 1/needles, chance for `single`). The report marks a model whose mean recall ≤ "
   "plateau + 0.05 as **not learned** (†) and keeps it out of the best ratio, Pareto fronts and claim "
   "verdicts", x_axis="context_len")
_m("final_loss", "nats", "final training loss", False, "training", "mqar niah lm",
   "mean training loss (per scored token) over the last steps")
_m("train_steps", "steps", "training steps", None, "training", "mqar niah lm",
   "optimiser steps taken (fewer than asked when early stopping fired)")
_m("train_s", "s", "training time", False, "training", "mqar niah lm", "wall time of training")
_m("val_loss", "nats", "validation loss", False, "lm", "lm",
   "mean next-token cross-entropy (per token) on the validation split", x_axis="context_len")
_m("val_ppl", "ratio", "validation perplexity", False, "lm", "lm", "exp(`val_loss`)", x_axis="context_len")
_m("val_bpb", "bits/byte", "validation bits per byte", False, "lm", "lm",
   "`val_loss` / ln 2 for byte-level text (bits per byte)", x_axis="context_len")

# --- lm-evaluation-harness (task `lm_eval`) --------------------------------------------------------
LM_EVAL_PREFIX = "lm_eval/"
#: lm-eval metric -> (unit, higher is better), as lm-eval's metric registry declares them
LM_EVAL_METRICS: dict[str, tuple[str, bool]] = {
    "acc": ("score", True),
    "acc_norm": ("score", True),
    "acc_mutual_info": ("score", True),
    "exact_match": ("score", True),
    "f1": ("score", True),
    "mcc": ("score", True),
    "bleu": ("score", True),
    "chrf": ("score", True),
    "ter": ("score", False),
    "brier_score": ("score", False),
    "score": ("score", True),  # RULER's per-length scores (named by the length in lm-eval)
    "perplexity": ("ppl", False),
    "word_perplexity": ("ppl", False),
    "byte_perplexity": ("ppl", False),
    "bits_per_byte": ("bits/byte", False),
}


#: the harness's own metrics (a plug-in's registered later are not among them)
BUILTIN = frozenset(_CATALOGUE)


def lm_eval_base(metric: str) -> Optional[str]:
    """The lm-eval metric of a row's ``lm_eval/<task>/<metric>[/<filter>]`` name (None otherwise)."""
    if not metric.startswith(LM_EVAL_PREFIX):
        return None
    parts = metric.split("/")
    return parts[2] if len(parts) >= 3 else None


def lookup(name: str) -> Optional[Metric]:
    """The catalogue's entry for `name` (an lm-eval row gets one made from its metric), or None."""
    hit = _CATALOGUE.get(name)
    if hit is not None:
        return hit
    base = lm_eval_base(name)
    if base is None:
        return None
    unit, better = LM_EVAL_METRICS.get(base, ("score", None))
    return Metric(name, unit, name[len(LM_EVAL_PREFIX):], better, "accuracy" if better else "lm", ("lm_eval",),
                  f"lm-evaluation-harness metric {base!r}", "context_len")


def get_metric(name: str) -> Metric:
    hit = lookup(name)
    if hit is None:
        raise UnknownMetricError(
            f"metric {name!r} is not in the catalogue (harness.metrics); a task's metric needs an entry "
            f"there (a plug-in task: harness.metrics.register_metric(Metric(...)))")
    return hit


def catalogue() -> list[Metric]:
    """Every catalogued metric (not the lm-eval family), in definition order."""
    return list(_CATALOGUE.values())


def x_axis(name: str) -> str:
    """The length column `name` is plotted against ("seq_len" for an unknown metric)."""
    hit = lookup(name)
    return hit.x_axis if hit is not None else "seq_len"


def higher_is_better(name: str) -> Optional[bool]:
    hit = lookup(name)
    return hit.higher_is_better if hit is not None else None


def names(kind: Optional[str] = None, prefix: str = "", task: Optional[str] = None) -> list[str]:
    """Catalogued metric names (in definition order): of one kind, with a name prefix, of a task."""
    return [m.name for m in _CATALOGUE.values()
            if (kind is None or m.kind == kind) and m.name.startswith(prefix) and (task is None or task in m.tasks)]


def time_metrics() -> list[str]:
    """The measured times of whole models, then of one mixer layer (the crossover's metrics; an
    op's time is not a model's)."""
    return [n for n in names("time") if not n.startswith("op_")]
