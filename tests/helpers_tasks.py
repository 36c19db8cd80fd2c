"""Cheap test-only tasks, independent of the models. Suites name this module under
`task_modules: [tests.helpers_tasks]`, so serial, pool and Ray workers all import it (run the
tests from the repository root). Importing it twice is harmless: registration is idempotent."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from harness.metrics import Metric, register_metric
from harness.registry import register_task
from harness.tasks.base import Task, metric_row

for _name, _unit in (("toy_value", "count"), ("toy_latency_s", "s"), ("toy_width", "count"), ("x", "s")):
    register_metric(Metric(_name, _unit, _name, None, "reference", ("toy",), "a test task's metric"))


@register_task("toy")
class Toy(Task):
    """Emits deterministic rows derived from the cell; `behavior` makes it fail in one way."""

    class Params(Task.Params):
        sleep_s: float = 0.0
        behavior: Literal["ok", "raise", "nan", "oom", "bad_row", "bad_value", "exit"] = "ok"
        #: only cells with these seeds misbehave (all cells when empty)
        bad_seeds: list[int] = []
        #: fail unless this file exists (to test --retry-failed)
        fail_unless_exists: str | None = None
        #: append "<cell_id> <pid>" to this file when the cell starts (to count runs)
        log: str | None = None

    def run(self, cell):
        p = self.params(cell)
        bad = not p.bad_seeds or cell.seed in p.bad_seeds
        behavior = p.behavior if bad else "ok"
        if behavior == "exit":
            os._exit(3)  # at once: a worker dying without a word (segfault, OOM killer) mid-sweep
        if p.log:
            with open(p.log, "a") as f:
                f.write(f"{cell.cell_id} {os.getpid()}\n")
        if p.sleep_s:
            time.sleep(p.sleep_s)
        if p.fail_unless_exists and not Path(p.fail_unless_exists).exists():
            raise RuntimeError(f"marker {p.fail_unless_exists} missing")
        if behavior == "raise":
            raise ValueError(f"toy failure at seq_len={cell.seq_len}")
        if behavior == "oom":
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")
        if behavior == "exit":
            os._exit(3)  # a worker dying without a word (segfault, OOM killer)
        if behavior == "bad_row":
            return [{"metric": "x", "value": 1.0, "unit": "s", "colour": "red"}]
        if behavior == "bad_value":
            return [metric_row("x", 1.0, "s", context_len=1.5)]  # not an int
        value = float("nan") if behavior == "nan" else float(cell.seq_len * (cell.seed + 1))
        return [
            metric_row("toy_value", value, "count"),
            metric_row("toy_latency_s", cell.seq_len / 1e6, "s", context_len=cell.seq_len, subtask="decode",
                       spread=0.0, n_repeats=3),
        ]


@register_task("toy_checkpoint")
class ToyCheckpoint(Task):
    """Imposes its model from its settings, like `lm_eval` does from a checkpoint's config."""

    class Params(Task.Params):
        width: int = 32

    @classmethod
    def model_from_params(cls, params):
        if params["width"] < 0:
            raise ValueError(f"width {params['width']} cannot be a checkpoint")
        return {"d_model": params["width"], "variant": "gla", "layout": "pure"}

    def run(self, cell):
        return [metric_row("toy_width", float(cell.model["d_model"]), "count")]
