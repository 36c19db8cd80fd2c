"""A cell: one fully resolved measurement (a task on one model config), and its stable id.

A cell is what a suite expands to and what an executor ships to a worker, so it is a plain,
picklable, frozen dataclass with no torch import. Its id is a hash of everything that defines
the measurement, with every default filled in, so the same measurement gets the same id in any
suite, on any machine, in any process.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # keep this module free of torch at import time
    import torch

    from harness.config import ModelConfig

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
BACKENDS = ("auto", "torch", "fla")


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

    def model_config(self) -> "ModelConfig":
        from harness.config import ModelConfig

        return ModelConfig.from_dict(dict(self.model))

    def torch_dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, self.dtype)

    @property
    def layout_kinds(self) -> list[str]:
        from harness.layout import resolve_layout

        return resolve_layout(self.model["layout"], self.model["n_layers"])

    @property
    def n_full_attn_layers(self) -> int:
        from harness.layout import ATTN

        return self.layout_kinds.count(ATTN)

    def label(self) -> str:
        """A short human description for messages and progress."""
        m = self.model
        extra = f" {canonical_json(self.params)}" if self.params else ""
        return (
            f"{self.task} {m['variant']} {m['layout']} L={m['n_layers']} d={m['d_model']} "
            f"T={self.seq_len} seed={self.seed}{extra}"
        )

    def identity_columns(self) -> dict[str, Any]:
        """The identity columns of every row this cell produces (see harness.schema)."""
        m = self.model
        return {
            "suite": self.suite,
            "cell_id": self.cell_id,
            "task": self.task,
            "variant": m["variant"],
            "layout": m["layout"],
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
