"""A compact, deterministic training loop for any HybridLM (or any module tokens -> logits).

    result = train(model, data, TrainConfig(steps=300, lr=3e-3, seed=0), eval_fn=...)

- AdamW (fused kernel where available); linear warmup then cosine decay to ``min_lr_ratio · lr``;
  gradient-norm clipping.
- Loss: cross-entropy on the positions the task marks, i.e. where ``targets != IGNORE`` (-100);
  a batch may also carry an explicit boolean ``mask`` (True = train on it).
- bf16 autocast on CUDA (``amp="auto"``); full precision on CPU.
- Deterministic: the model's dropout-free forward, the batch order (a seeded ``torch.Generator``)
  and torch's global RNG (``torch.manual_seed``) all derive from ``seed``, and
  ``torch.use_deterministic_algorithms(True, warn_only=True)`` is on for the duration (restored
  afterwards). Same seed, same data, same device → the same losses, bit for bit on CPU.
- ``compile=True`` runs the training forward (and so its backward) through ``torch.compile``:
  faster steps after a one-off compile (measured in docs/training.md and
  reports/benchmarks/train_step_compiled_cpu.json); evaluation (``eval_fn``) keeps the eager
  model. Reruns stay bit-identical; compiled and eager losses agree to float rounding, not bit
  for bit.
- Early stop: with ``early_stop_acc`` and an ``eval_fn(model) -> accuracy``, evaluate every
  ``eval_every`` steps and stop once the accuracy reaches the target.
- Divergence: a non-finite loss or gradient norm, or a loss above ``diverge_factor`` × the
  initial loss, stops training with ``status="diverged"`` and the reason in ``error``.

``data`` is either a dict of tensors with ``inputs`` and ``targets`` [N, T] (optionally ``mask``),
sampled in seeded random order, epoch after epoch, or a callable ``(step, generator) -> batch``
returning such a dict (or a tuple ``(inputs, targets[, mask])``) for streams such as random
windows of a text corpus.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.data import IGNORE

Batch = Mapping[str, torch.Tensor] | tuple
DataSource = Mapping[str, torch.Tensor] | Callable[[int, torch.Generator], Batch]


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int | None = None  # default: 10% of steps
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0  # max gradient norm; None or 0 = no clipping
    seed: int = 0
    amp: str = "auto"  # "auto" (bf16 autocast on CUDA only) | "bf16" | "fp16" | "off"
    early_stop_acc: float | None = None
    eval_every: int = 50  # steps between evaluations when early stopping
    diverge_factor: float = 10.0  # loss > factor * initial loss → diverged
    deterministic: bool = True
    log_every: int = 0  # print the loss every n steps (0: silent)
    compile: bool = False  # training forward + backward through torch.compile (see module doc)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        if self.early_stop_acc is not None and self.eval_every < 1:
            raise ValueError("eval_every must be >= 1 when early_stop_acc is set")

    @property
    def warmup(self) -> int:
        w = self.warmup_steps if self.warmup_steps is not None else round(0.1 * self.steps)
        return max(0, min(int(w), self.steps))


@dataclass
class TrainResult:
    status: str  # "ok" | "diverged"
    steps: int  # optimiser steps taken
    losses: list[float]  # training loss per step
    initial_loss: float
    final_loss: float  # mean training loss over the last few steps (see `final_loss_of`)
    error: str | None = None
    early_stopped: bool = False
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, accuracy)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_lambda(step: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr at optimiser step `step` (0-based): warmup, then cosine."""
    w = cfg.warmup
    if w and step < w:
        return (step + 1) / w
    span = max(1, cfg.steps - w)
    progress = min(1.0, (step - w) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def final_loss_of(losses: list[float]) -> float:
    """The mean of the last max(1, min(20, n // 10)) losses: less noisy than the last step."""
    if not losses:
        return float("nan")
    k = max(1, min(20, len(losses) // 10))
    return float(sum(losses[-k:]) / k)


def masked_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions whose target is not IGNORE."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def _as_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        inputs, targets, mask = batch["inputs"], batch["targets"], batch.get("mask")
    else:
        inputs, targets, *rest = batch
        mask = rest[0] if rest else None
    if mask is not None:
        targets = targets.masked_fill(~mask.bool(), IGNORE)
    return inputs, targets


def _autocast(device: torch.device, amp: str, param_dtype: torch.dtype):
    if amp == "off" or param_dtype != torch.float32:
        return contextlib.nullcontext()
    if amp == "auto":
        if device.type != "cuda":
            return contextlib.nullcontext()
        amp = "bf16"
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class _Sampler:
    """Seeded random order over a fixed dataset, one permutation per epoch."""

    def __init__(self, data: Mapping[str, torch.Tensor], batch_size: int, g: torch.Generator):
        self.data = {k: v for k, v in data.items() if k in ("inputs", "targets", "mask")}
        self.n = int(self.data["inputs"].shape[0])
        if self.n < 1:
            raise ValueError("training data is empty")
        self.bs = min(batch_size, self.n)
        self.g = g
        self.perm = torch.randperm(self.n, generator=g)
        self.pos = 0

    def __call__(self, step: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        if self.pos + self.bs > self.n:
            self.perm = torch.randperm(self.n, generator=self.g)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.bs]
        self.pos += self.bs
        return {k: v[idx] for k, v in self.data.items()}


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True):
    """torch.use_deterministic_algorithms(True, warn_only=True) inside the block, restored after."""
    if not enabled:
        yield
        return
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on embeddings, norms and biases)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and "embeddings" not in name else no_decay).append(p)
    # fused AdamW: one kernel per parameter instead of a dozen tiny ops (CPU and CUDA; the
    # update is the same math and deterministic, so reruns stay bit-identical)
    params = decay + no_decay
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.betas, **({"fused": True} if fused else {}),
    )


def _loss_diverged(value: float, initial: float, step: int, cfg: TrainConfig) -> str | None:
    """Why training diverged at this loss (non-finite, or diverge_factor x the first), or None."""
    if not math.isfinite(value):
        return f"non-finite training loss {value} at step {step}"
    if step > 0 and math.isfinite(initial) and value > cfg.diverge_factor * initial:
        return (f"training loss {value:.4g} at step {step} exceeds {cfg.diverge_factor:g} x the "
                f"initial loss {initial:.4g}")
    return None


def _clipped_grad_norm(model: nn.Module, cfg: TrainConfig) -> float:
    """The gradients' global norm, clipping them to cfg.grad_clip when set."""
    if cfg.grad_clip:
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
    return float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None)))


def train(
    model: nn.Module,
    data: DataSource,
    cfg: TrainConfig,
    eval_fn: Callable[[nn.Module], float] | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train `model` in place on `data`; return the losses and how training ended."""
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    sample = _Sampler(data, cfg.batch_size, g) if isinstance(data, Mapping) else data
    param_dtype = next(model.parameters()).dtype
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, cfg))
    t0 = time.perf_counter()
    model.train()
    forward = torch.compile(model) if cfg.compile else model  # shares the parameters
    run = _Run(model, forward, opt, sched, cfg, device, param_dtype)
    with deterministic_mode(cfg.deterministic):
        for step in range(cfg.steps):
            if not run.step(step, sample(step, g)) or run.stop_early(step, eval_fn):
                break
    model.eval()
    return run.result(time.perf_counter() - t0)


@dataclass
class _Run:
    """One training run's state: what it steps with, and what it has seen so far."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its compiled twin
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    cfg: TrainConfig
    device: torch.device
    param_dtype: torch.dtype
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    status: str = "ok"
    error: str | None = None
    early: bool = False
    initial: float = float("nan")

    def step(self, step: int, batch: Any) -> bool:
        """One optimiser step on `batch`; False when training diverged (status and error say why)."""
        cfg = self.cfg
        inputs, targets = _as_batch(batch)
        inputs, targets = inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        with _autocast(self.device, cfg.amp, self.param_dtype):
            logits = self.forward(inputs)
        loss = masked_loss(logits, targets)
        value = float(loss.detach())
        self.losses.append(value)
        if step == 0:
            self.initial = value
        self.error = _loss_diverged(value, self.initial, step, cfg)
        if self.error:
            self.status = "diverged"
            return False
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if not math.isfinite(_clipped_grad_norm(self.model, cfg)):
            self.status, self.error = "diverged", f"non-finite gradient norm at step {step}"
            return False
        self.opt.step()
        self.sched.step()
        if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            print(f"step {step:5d}  loss {value:.4f}  lr {self.sched.get_last_lr()[0]:.2e}", flush=True)
        return True

    def stop_early(self, step: int, eval_fn: Callable[[nn.Module], float] | None) -> bool:
        """Every eval_every steps (not after the last), evaluate; True once the accuracy reaches
        early_stop_acc."""
        cfg = self.cfg
        if cfg.early_stop_acc is None or eval_fn is None or (step + 1) % cfg.eval_every or step + 1 >= cfg.steps:
            return False
        acc = float(eval_fn(self.model))
        self.model.train()
        self.evals.append((step + 1, acc))
        self.early = acc >= cfg.early_stop_acc
        return self.early

    def result(self, wall_s: float) -> TrainResult:
        losses, ok = self.losses, self.status == "ok"
        return TrainResult(
            status=self.status, steps=len(losses) if ok else max(0, len(losses) - 1), losses=losses,
            initial_loss=self.initial,
            final_loss=final_loss_of(losses) if ok else (losses[-1] if losses else float("nan")),
            error=self.error, early_stopped=self.early, evals=self.evals, wall_s=wall_s,
        )


__all__ = ["TrainConfig", "TrainResult", "train", "lr_lambda", "masked_loss", "final_loss_of", "deterministic_mode"]
