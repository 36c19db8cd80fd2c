"""What every training task shares (mqar, niah, lm): the training settings, building the cell's
model for training, the training config, saving the trained model, and the rows of a cell whose
training diverged. The loop itself is harness.runtime.train."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from harness.tasks.base import PRIOR_FLOPS, Task, added_setting, forward_flops, metric_row

if TYPE_CHECKING:
    import torch

    from harness.sweep.cell import Cell


class TrainParams(Task.Params):
    """Training and evaluation settings shared by the training tasks."""

    steps: int = Field(400, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int | None = Field(None, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float | None = Field(1.0, ge=0)
    #: stop once the accuracy on a held-out probe set reaches this (checked every eval_every steps)
    early_stop_acc: float | None = Field(None, gt=0, le=1)
    eval_every: int = Field(50, ge=1)
    diverge_factor: float = Field(10.0, gt=1)
    #: train through torch.compile (harness.runtime.train): faster steps after a 10-30 s compile per cell
    compile: bool = added_setting(False)
    #: directory to save the trained model in, as <save_dir>/<cell_id>/ (config.json + model.safetensors)
    save_dir: str | None = None


def _amp_and_dtype(cell: Cell) -> tuple[str, torch.dtype]:
    """Master weights stay fp32 (fp64 if asked); a half dtype means autocast to it."""
    import torch

    if cell.dtype == "float64":
        return "off", torch.float64
    if cell.dtype == "bfloat16":
        return "bf16", torch.float32
    if cell.dtype == "float16":
        return "fp16", torch.float32
    return "auto", torch.float32


def build_for_training(cell: Cell):
    import torch

    from harness.model.lm import build_model
    from harness.runtime.devices import resolve_device

    device = resolve_device(cell.device)
    amp, dtype = _amp_and_dtype(cell)
    torch.manual_seed(cell.seed)
    model = build_model(cell.model_config(), device, dtype, cell.backend)
    return model, device, amp


def train_config(p: TrainParams, cell: Cell, amp: str):
    from harness.runtime.train import TrainConfig

    return TrainConfig(
        steps=p.steps, batch_size=p.batch_size, lr=p.lr, warmup_steps=p.warmup_steps,
        min_lr_ratio=p.min_lr_ratio, weight_decay=p.weight_decay, grad_clip=p.grad_clip or None,
        seed=cell.seed, amp=amp, early_stop_acc=p.early_stop_acc, eval_every=p.eval_every,
        diverge_factor=p.diverge_factor, compile=p.compile,
    )


def _producer(cell: Cell, extra: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's config records of the cell that trained it."""
    return {"task": cell.task, "params": dict(cell.params), "seed": cell.seed, "seq_len": cell.seq_len, **extra}


def save_trained(model, p: TrainParams, cell: Cell, extra: dict[str, Any]) -> None:
    """Save the model under the user's `save_dir` (params.save_dir/<cell_id>/), when set."""
    if not p.save_dir:
        return
    from harness.model.checkpoint import save_checkpoint

    save_checkpoint(model, Path(p.save_dir).expanduser() / cell.cell_id, extra=_producer(cell, extra))


def save_cell_checkpoint(model, cell: Cell, extra: dict[str, Any] | None = None) -> Path | None:
    """Save a trained model where the runner asked (`cell.checkpoint_dir`, set when another cell
    of the sweep consumes this one's checkpoint); None when it did not ask."""
    if not cell.checkpoint_dir:
        return None
    from harness.model.checkpoint import save_checkpoint

    return save_checkpoint(model, Path(cell.checkpoint_dir).expanduser(),
                           extra={"cell_id": cell.cell_id, **_producer(cell, extra or {})})


def diverged_rows(result, metrics: list[tuple[str, str | None, int | None]]) -> list[dict[str, Any]]:
    """Every row of a cell whose training diverged: status diverged, the reason as error.
    `metrics`: (metric, subtask, context_len) of each evaluation row the cell would have had."""
    rows = [metric_row(m, float("nan"), subtask=s, context_len=c, status="diverged", error=result.error)
            for m, s, c in metrics]
    rows.append(metric_row("final_loss", result.final_loss, status="diverged", error=result.error))
    rows.append(metric_row("train_steps", float(result.steps), status="diverged", error=result.error))
    return rows


class TrainingTask(Task):
    """The base of the tasks that train the cell's model (mqar, niah, lm)."""

    def expected_seconds(self, cell: Cell) -> float:
        p = self.params(cell)
        steps = int(getattr(p, "steps", 100))
        tokens = steps * int(getattr(p, "batch_size", 32)) * cell.seq_len
        return 1.0 + 3 * forward_flops(cell, tokens) / PRIOR_FLOPS  # forward + backward

