"""`lm`: language modelling on real text. Train a small HybridLM, report validation loss.

The corpus (harness.data.text) is CPython's bundled documentation (``pydoc_data.topics``,
~0.47 MB) by default, tokenised as UTF-8 bytes (vocabulary 256; the model's vocab_size must be
at least 256), split by position: the last ``val_fraction`` of the bytes is validation. Local
files, a directory or a glob work too (``corpus: ~/texts/*.txt``), and ``corpus: hf:<dataset>``
with ``tokenizer: <name>`` uses Hugging Face ``datasets`` + ``transformers`` when installed and
online.

Training: random windows of ``cell.seq_len + 1`` tokens of the training split, drawn with a
generator seeded by the cell's seed (harness.runtime.train: AdamW, warmup + cosine, clipping). Every
position is a target.

Evaluation: ``eval_windows`` non-overlapping windows from the start of the validation split
(the same tokens for every cell at a given seq_len), every token scored once.

Rows: ``val_loss`` (nats/token), ``val_ppl`` (exp(val_loss)), ``val_bpb`` (bits per UTF-8 byte:
val_loss / ln 2 for byte-level tokens, scaled by tokens per byte otherwise), ``final_loss`` (nats,
training), ``train_steps``, ``train_s``. A diverged run reports every row with status diverged.

Checkpoint: with ``save_dir`` the trained model is saved as ``<save_dir>/<cell_id>/``; and when
another cell of the sweep consumes it (``checkpoint: {from: lm}``, docs/suites.md), the runner
sets ``cell.checkpoint_dir`` and the model is saved there too. A diverged run saves nothing.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import Field

from harness.registry import register_task
from harness.tasks.base import metric_row
from harness.tasks.training import (
    TrainingTask,
    TrainParams,
    build_for_training,
    diverged_rows,
    save_cell_checkpoint,
    save_trained,
    train_config,
)

if TYPE_CHECKING:
    from harness.sweep.cell import Cell


@lru_cache(maxsize=4)
def _corpus(spec: str, val_fraction: float, tokenizer: str | None, max_chars: int | None):
    from harness.data.text import load_corpus

    return load_corpus(spec, val_fraction=val_fraction, tokenizer=tokenizer, max_chars=max_chars)


@register_task("lm")
class LM(TrainingTask):
    #: other cells of a sweep may consume this task's trained model (`{from: lm}`)
    saves_checkpoint = True

    class Params(TrainParams):
        corpus: str = "pydoc"  # "pydoc" | a file, directory or glob | "hf:<dataset>[:<config>][@<split>]"
        tokenizer: str | None = None  # only with an hf: corpus; None = bytes
        val_fraction: float = Field(0.1, gt=0, lt=1)
        max_chars: int | None = Field(None, ge=2)  # use only the first max_chars characters
        eval_windows: int = Field(64, ge=1)  # validation windows of seq_len tokens
        eval_batch_size: int = Field(32, ge=1)
        steps: int = Field(300, ge=1)
        batch_size: int = Field(16, ge=1)

    def check(self, cell: Cell) -> None:
        p = self.params(cell)
        if p.early_stop_acc is not None:
            raise ValueError("lm: early_stop_acc does not apply (language modelling has no accuracy target)")
        if p.tokenizer not in (None, "bytes"):
            if not p.corpus.startswith("hf:"):
                raise ValueError("lm: a tokenizer needs an 'hf:' corpus; local corpora are byte-level")
        elif int(cell.model["vocab_size"]) < 256:
            raise ValueError(f"lm: byte-level text needs vocab_size >= 256, the model has {cell.model['vocab_size']}")

    def run(self, cell: Cell) -> list[dict[str, Any]]:
        import torch

        from harness.data.text import eval_windows, random_windows
        from harness.runtime.train import masked_loss, train

        p = self.params(cell)
        corpus = _corpus(p.corpus, p.val_fraction, p.tokenizer, p.max_chars)
        if corpus.vocab_size > int(cell.model["vocab_size"]):
            raise ValueError(f"lm: the corpus vocabulary ({corpus.vocab_size}) exceeds the model's vocab_size "
                             f"({cell.model['vocab_size']})")
        T = cell.seq_len
        val = eval_windows(corpus.val, T, p.eval_windows)
        model, device, amp = build_for_training(cell)
        cfg = train_config(p, cell, amp)
        result = train(model, lambda step, g: random_windows(corpus.train, T, p.batch_size, g), cfg, device=device)
        metrics = [("val_loss", None, T), ("val_ppl", None, T), ("val_bpb", None, T)]
        if not result.ok:
            return diverged_rows(result, metrics)

        total, count = 0.0, 0
        model.eval()
        with torch.no_grad():
            for i in range(0, val["inputs"].shape[0], p.eval_batch_size):
                x = val["inputs"][i:i + p.eval_batch_size].to(device)
                y = val["targets"][i:i + p.eval_batch_size].to(device)
                n = y.numel()
                total += float(masked_loss(model(x), y)) * n
                count += n
        loss = total / count
        rows = [
            metric_row("val_loss", loss, context_len=T),
            metric_row("val_ppl", math.exp(min(loss, 700.0)), context_len=T),
            metric_row("val_bpb", corpus.bits_per_byte(loss), context_len=T),
            metric_row("final_loss", result.final_loss),
            metric_row("train_steps", float(result.steps)),
            metric_row("train_s", result.wall_s),
        ]
        save_trained(model, p, cell, {"val_loss": loss, "corpus": corpus.name})
        save_cell_checkpoint(model, cell, {"val_loss": loss, "corpus": corpus.name})
        return rows
