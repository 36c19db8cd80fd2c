"""`analytic`: the per-cell analytic costs (no model is run; see harness.model.costs).

FLOPs per token, recurrent-state bytes and KV-cache bytes at the cell's sequence length and
batch, in the cell's dtype. Cheap enough for any shape: the model is built on the meta device.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.registry import register_task
from harness.tasks.base import Task

if TYPE_CHECKING:
    from harness.sweep.cell import Cell


@register_task("analytic")
class Analytic(Task):
    class Params(Task.Params):
        pass

    def resources(self, cell: Cell) -> dict[str, float]:
        return {"num_cpus": 1, "num_gpus": 0}  # arithmetic only, whatever the cell's device

    def expected_seconds(self, cell: Cell) -> float:
        return 0.05

    def run(self, cell: Cell) -> list[dict[str, Any]]:
        from harness.model.costs import model_costs

        return model_costs(cell.model_config(), cell.seq_len, cell.batch, cell.torch_dtype())
