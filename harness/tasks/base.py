"""The Task interface: what one cell measures.

A task is a class registered under a short name::

    from harness.registry import register_task
    from harness.tasks.base import Task

    @register_task("my_task")
    class MyTask(Task):
        class Params(Task.Params):  # the task's settings; unknown keys are rejected
            n_repeats: int = 3

        def run(self, cell):
            p = self.params(cell)
            return [metric_row("my_metric", 1.0, "s", n_repeats=p.n_repeats)]

The runner instantiates the class with no arguments, seeds the RNGs with `cell.seed`, calls
`run(cell)` and turns the rows into table rows. An exception, an out-of-memory error or a NaN
becomes a row with a status and an error; a task need not catch anything itself.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from harness.sweep.cell import Cell


class Task:
    #: set by @register_task
    name: ClassVar[str] = ""
    #: True when the task cannot run without a GPU (Ray then asks for one GPU per cell)
    needs_gpu: ClassVar[bool] = False

    class Params(BaseModel):
        """The task's settings. Subclass it; keep extra="forbid" so typos are errors."""

        model_config = ConfigDict(extra="forbid")

        def identity(self) -> dict[str, Any]:
            """The settings as they enter a cell's id: every field, defaults filled in, except
            a field declared with `added_setting` while it holds its default (so adding a
            setting to a task never renames the cells that were run before it existed)."""
            out = self.model_dump(mode="json")
            for name, f in type(self).model_fields.items():
                extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
                if extra.get(_ADDED) and getattr(self, name) == f.default:
                    out.pop(name, None)
            return out

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.Params.model_config.get("extra") != "forbid":
            raise TypeError(
                f"{cls.__qualname__}.Params must forbid unknown keys: subclass Task.Params "
                f"or set model_config = ConfigDict(extra='forbid')"
            )

    def params(self, cell: Cell) -> Task.Params:
        """The cell's settings as this task's Params instance."""
        return self.Params.model_validate(dict(cell.params))

    @classmethod
    def model_from_params(cls, params: dict[str, Any]) -> dict[str, Any] | None:
        """ModelConfig fields that the task's settings impose on the cell (e.g. the shape of a
        checkpoint it evaluates), overriding the suite's; None (the default) keeps the suite's.
        Called while the suite is expanded; raise ValueError for settings that cannot work."""
        return None

    def check(self, cell: Cell) -> None:
        """Raise ValueError if `cell` is impossible for this task. Called for every cell while
        the suite is validated, before anything runs; must be cheap and must not touch torch
        devices. The default accepts everything."""

    def expected_seconds(self, cell: Cell) -> float:
        """A rough prior for how long `cell` takes on one CPU core, for the sweep's ETA: only the
        ratios between cells of this task matter, since the progress display rescales each task's
        estimates by what its finished cells took. Default: 1 s."""
        return 1.0

    def resources(self, cell: Cell) -> dict[str, float]:
        """What one run of `cell` needs, in Ray's terms (num_cpus, num_gpus)."""
        gpu = self.needs_gpu or cell.device.startswith("cuda")
        return {"num_cpus": 1, "num_gpus": 1 if gpu else 0}

    def run(self, cell: Cell) -> list[dict[str, Any]]:
        """Measure `cell`; return rows, each at least {metric, value, unit}. Optional keys:
        status, error, subtask (str), context_len (int), spread (float, e.g. IQR of repeats),
        n_repeats (int), backend / device (what was actually used)."""
        raise NotImplementedError


#: floating-point operations per second a CPU core sustains on the harness's small models, for
#: `expected_seconds` priors (the progress display calibrates them against finished cells)
PRIOR_FLOPS = 5e10


def forward_flops(cell: Cell, tokens: int) -> float:
    """Rough forward FLOPs of a cell's model over `tokens` tokens in sequences of the cell's
    seq_len: ~24 d^2 per token per layer (projections and MLP), plus the quadratic part of each
    softmax layer. A prior for ETAs, not a cost model (harness.model.costs is the exact one)."""
    d, n = int(cell.model.get("d_model", 128)), int(cell.model.get("n_layers", 4))
    return tokens * (24.0 * d * d * n + 4.0 * cell.seq_len * d * cell.n_full_attn_layers)


_ADDED = "harness_added_setting"


def added_setting(default: Any, **kwargs: Any) -> Any:
    """`Field(default, ...)` for a setting added to a task after cells of it were stored: it
    enters a cell's id only when set to something other than `default` (Params.identity)."""
    return Field(default, json_schema_extra={_ADDED: True}, **kwargs)


def catalogued_unit(metric: str, unit: str | None = None) -> str:
    """The unit of `metric` from the catalogue; a `unit` given must agree with it. Raises for a
    metric the catalogue does not have (register a plug-in task's metrics first)."""
    from harness.metrics import get_metric

    want = get_metric(metric).unit
    if unit is not None and unit != want:
        raise ValueError(f"metric {metric!r} has unit {want!r} in the catalogue (harness.metrics), "
                         f"not {unit!r}")
    return want


def metric_row(
    metric: str,
    value: float,
    unit: str | None = None,
    *,
    subtask: str | None = None,
    context_len: int | None = None,
    spread: float | None = None,
    n_repeats: int | None = None,
    status: str | None = None,
    error: str | None = None,
    **timing: Any,
) -> dict[str, Any]:
    """A task's row, leaving out the optional keys that are not set. The unit is the metric
    catalogue's (harness.metrics): pass it only to have it checked. `timing` takes the
    timing-provenance columns (`harness.runtime.timing.Timing.provenance`: clock, wall_time_s, ...)."""
    unknown = set(timing) - TIMING_KEYS
    if unknown:
        raise TypeError(f"metric_row: unknown keys {sorted(unknown)}; allowed besides the named ones: "
                        f"{sorted(TIMING_KEYS)}")
    row: dict[str, Any] = {"metric": metric, "value": value, "unit": catalogued_unit(metric, unit)}
    for key, val in (("subtask", subtask), ("context_len", context_len), ("spread", spread),
                     ("n_repeats", n_repeats), ("status", status), ("error", error), *timing.items()):
        if val is not None:
            row[key] = val
    return row


#: the timing-provenance columns a row may carry (harness.sweep.results)
TIMING_KEYS = frozenset({"clock", "wall_time_s", "cpu_time_s", "threads", "loaded"})
