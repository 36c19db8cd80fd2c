"""The metric catalogue: every metric a task writes, with its unit, label, direction and length
axis, defined once (the data: harness/metrics.yaml).

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
from pathlib import Path

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
    higher_is_better: bool | None
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


CATALOGUE_FILE = Path(__file__).with_name("metrics.yaml")


def _load_catalogue() -> dict[str, tuple[str, bool | None]]:
    """Register the built-in metrics from metrics.yaml; return the lm-eval metric table."""
    import yaml

    data = yaml.safe_load(CATALOGUE_FILE.read_text(encoding="utf-8"))
    for entry in data["metrics"]:
        register_metric(Metric(entry["name"], entry["unit"], entry["label"], entry["higher_is_better"], entry["kind"],
                               tuple(entry["tasks"]), entry["description"], entry.get("x_axis", "seq_len")))
    return {name: (e["unit"], e["higher_is_better"]) for name, e in data["lm_eval_metrics"].items()}


LM_EVAL_PREFIX = "lm_eval/"
#: lm-eval metric -> (unit, higher is better), as lm-eval's metric registry declares them
LM_EVAL_METRICS: dict[str, tuple[str, bool | None]] = _load_catalogue()
#: the harness's own metrics (a plug-in's registered later are not among them)
BUILTIN = frozenset(_CATALOGUE)


def lm_eval_base(metric: str) -> str | None:
    """The lm-eval metric of a row's ``lm_eval/<task>/<metric>[/<filter>]`` name (None otherwise)."""
    if not metric.startswith(LM_EVAL_PREFIX):
        return None
    parts = metric.split("/")
    return parts[2] if len(parts) >= 3 else None


def lookup(name: str) -> Metric | None:
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


def higher_is_better(name: str) -> bool | None:
    hit = lookup(name)
    return hit.higher_is_better if hit is not None else None


def names(kind: str | None = None, prefix: str = "", task: str | None = None) -> list[str]:
    """Catalogued metric names (in definition order): of one kind, with a name prefix, of a task."""
    return [m.name for m in _CATALOGUE.values()
            if (kind is None or m.kind == kind) and m.name.startswith(prefix) and (task is None or task in m.tasks)]


def time_metrics() -> list[str]:
    """The measured times of whole models, then of one mixer layer (the crossover's metrics; an
    op's time is not a model's)."""
    return [n for n in names("time") if not n.startswith("op_")]
