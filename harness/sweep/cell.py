"""A cell: one fully resolved measurement (a task on one model config), and its stable id.

A cell is what a suite expands to and what an executor ships to a worker, so it is a plain,
picklable, frozen dataclass with no torch import. Its id is a hash of everything that defines
the measurement, with every default filled in, so the same measurement gets the same id in any
suite, on any machine, in any process.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # keep this module free of torch at import time
    import torch

    from harness.model.config import ModelConfig

#: Run-level settings of a cell and their defaults (suite axes may set any of them).
RUN_DEFAULTS: dict[str, Any] = {
    "seq_len": 1024,
    "batch": 1,
    "seed": 0,
    "dtype": "float32",
    "device": "cpu",
    "backend": "auto",
}
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")


class Dependency(NamedTuple):
    """A cell's parameter whose value is the output (checkpoint) of another cell of the sweep."""

    param: str  # the consumer's parameter that receives the checkpoint path
    task: str  # the producing task
    cell_id: str  # the producing cell


#: the form a reference takes in a resolved cell's params: {"from": <task>, "cell": <cell_id>}
REF_FROM, REF_CELL = "from", "cell"
_PENDING = "pending-checkpoint:"


def pending_input(task: str, cell_id: str) -> str:
    """The stand-in string a reference parameter has while a suite is validated (a task's
    Params and `check` see this instead of a path that does not exist yet)."""
    return f"{_PENDING}{task}/{cell_id}"


def is_pending_input(value: Any) -> bool:
    """True for the stand-in of a checkpoint another cell will produce (see `pending_input`):
    a task's `check` should not look for it on disk."""
    return isinstance(value, str) and value.startswith(_PENDING)


def canonical(value: Any) -> Any:
    """Normalise a JSON-able value so equal settings hash equally.

    Integral floats become ints (YAML `4` and `4.0` mean the same mlp_ratio), tuples become
    lists, mapping keys become strings. Non-finite floats are refused: they cannot be settings.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r} in a cell's settings")
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    raise TypeError(f"cannot hash a setting of type {type(value).__name__}: {value!r}")


def canonical_json(value: Any) -> str:
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def hash_identity(identity: Mapping[str, Any], length: int = 16) -> str:
    """First `length` hex digits of the sha256 of the canonical JSON of `identity`."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Cell:
    suite: str
    task: str
    params: Mapping[str, Any]  # resolved task settings (the task's Params, defaults filled in)
    model: Mapping[str, Any]  # full ModelConfig.to_dict(), layout canonicalised
    seq_len: int = RUN_DEFAULTS["seq_len"]
    batch: int = RUN_DEFAULTS["batch"]
    seed: int = RUN_DEFAULTS["seed"]
    dtype: str = RUN_DEFAULTS["dtype"]
    device: str = RUN_DEFAULTS["device"]
    backend: str = RUN_DEFAULTS["backend"]
    #: modules to import before looking the task up (plug-in / test tasks); not part of the id
    task_modules: tuple[str, ...] = field(default=())
    #: where to save the trained model, set by the runner when another cell consumes it (a
    #: task that `saves_checkpoint` writes it there); not part of the id
    checkpoint_dir: str | None = None
    #: resolved inputs, set by the runner: parameter name -> the producing cell's checkpoint
    #: path, for each parameter that is a reference (see `dependencies`); not part of the id
    inputs: Mapping[str, str] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """Everything that defines the measurement. Not the suite: the same cell in two suites
        is the same measurement. Not task_modules: where code lives is not what it measures."""
        return {
            "task": self.task,
            "params": dict(self.params),
            "model": dict(self.model),
            "seq_len": self.seq_len,
            "batch": self.batch,
            "seed": self.seed,
            "dtype": self.dtype,
            "device": self.device,
            "backend": self.backend,
        }

    @cached_property
    def cell_id(self) -> str:
        return hash_identity(self.identity())

    def __hash__(self) -> int:  # dict fields are unhashable; the id is the identity anyway
        return hash(self.cell_id)

    def dependencies(self) -> list[Dependency]:
        """The cells this one consumes: each parameter whose value is a reference
        ``{"from": task, "cell": cell_id}`` (written ``{from: task}`` in a suite and resolved by
        harness.sweep.references). The producer's id is in the params, hence in this cell's id."""
        return [
            Dependency(name, str(v[REF_FROM]), str(v[REF_CELL]))
            for name, v in self.params.items()
            if isinstance(v, Mapping) and REF_FROM in v and REF_CELL in v
        ]

    def with_inputs(self, inputs: Mapping[str, str], checkpoint_dir: str | None = None) -> Cell:
        """This cell with resolved input paths (and where to save its checkpoint); same id."""
        return dataclasses.replace(self, inputs=dict(inputs), checkpoint_dir=checkpoint_dir or self.checkpoint_dir)

    def for_task(self) -> Cell:
        """The cell as its task sees it: each reference parameter replaced by the path the runner
        resolved (`inputs`). Its `cell_id` stays this cell's (the id of a measurement does not
        depend on where its input lies). Raises ValueError for an unresolved reference."""
        deps = self.dependencies()
        if not deps:
            return self
        missing = [d for d in deps if d.param not in self.inputs]
        if missing:
            raise ValueError(
                "unresolved input(s): " + ", ".join(f"{d.param} (the checkpoint of {d.task} cell {d.cell_id})"
                                                     for d in missing)
                + "; a cell that consumes another's output runs through harness.sweep.driver.run_sweep"
            )
        view = dataclasses.replace(self, params={**self.params, **{d.param: self.inputs[d.param] for d in deps}})
        object.__setattr__(view, "cell_id", self.cell_id)  # pin the cached id to the consumer's
        return view

    def model_config(self) -> ModelConfig:
        from harness.model.config import ModelConfig

        return ModelConfig.from_dict(dict(self.model))

    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)

    @property
    def layout_kinds(self) -> list[str]:
        from harness.model.layout import DEFAULT_PLACEMENT, resolve_layout

        return resolve_layout(self.model["layout"], self.model["n_layers"],
                              self.model.get("placement", DEFAULT_PLACEMENT))

    @property
    def n_full_attn_layers(self) -> int:
        from harness.model.layout import ATTN

        return self.layout_kinds.count(ATTN)

    def label(self) -> str:
        """A short human description for messages and progress."""
        m = self.model
        extra = f" {canonical_json(self.params)}" if self.params else ""
        placed = f" {m['placement']}" if m.get("placement") else ""
        placed += f" w={m['window']}" if m.get("window") else ""
        return (
            f"{self.task} {m['variant']} {m['layout']}{placed} L={m['n_layers']} d={m['d_model']} "
            f"T={self.seq_len} seed={self.seed}{extra}"
        )

    def identity_columns(self) -> dict[str, Any]:
        """The identity columns of every row this cell produces (see harness.sweep.results)."""
        from harness.model.layout import DEFAULT_PLACEMENT

        m = self.model
        return {
            "suite": self.suite,
            "cell_id": self.cell_id,
            "task": self.task,
            "variant": m["variant"],
            "layout": m["layout"],
            "placement": m.get("placement", DEFAULT_PLACEMENT),
            "window": m.get("window"),
            "n_layers": m["n_layers"],
            "n_full_attn_layers": self.n_full_attn_layers,
            "d_model": m["d_model"],
            "n_heads": m["n_heads"],
            "seq_len": self.seq_len,
            "batch": self.batch,
            "seed": self.seed,
            "params": canonical_json(self.params),
            "model_config": canonical_json(self.model),
            "backend": self.backend,
            "device": self.device,
            "dtype": self.dtype,
        }
