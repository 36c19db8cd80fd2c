"""Synthetic recall tasks: train a small HybridLM from scratch, then score recall per length.

- ``mqar``: Zoology's multi-query associative recall (harness.data.mqar).
- ``niah``: RULER-style needle in a haystack, subtasks single / multikey / multiquery /
  multivalue, with the "noise" (repeated filler) haystack (harness.data.niah).

One cell = one model: it is trained on ``n_train`` generated sequences of length ``cell.seq_len``
(harness.runtime.train: AdamW, warmup + cosine, clipping, seeded), then scored on ``n_test`` fresh
sequences at each of ``eval_lengths`` (default: the cell's seq_len). Training data depends on the
cell's seed; the test sets do not (every cell of a suite is scored on the same sequences), and any
training sequence identical to a test sequence is dropped.

Rows (docs/metrics.md):
- ``recall_acc`` (fraction), one per subtask and eval length (``subtask`` = ``mqar`` or
  ``niah_<subtask>``, ``context_len`` = the eval length): the mean over test sequences of the
  fraction of their answers that are exactly right (every token is the argmax under teacher
  forcing = what greedy decoding would emit).
- ``recall_chance`` and ``recall_plateau`` (fraction), beside every ``recall_acc`` row (same
  subtask and context_len): the uninformed-guess level and the plateau of a model that copies a
  value from the context without binding it to its key (MQAR: about 2/vocab and 1/num_kv_pairs;
  NIAH: see `NIAHConfig.reference_levels`). The report calls recall at or below the plateau (plus
  a margin) "not learned" and keeps it out of rankings and claims.
- ``final_loss`` (nats): mean training loss over the last steps (answer positions only).
- ``train_steps`` (steps) and ``train_s`` (s).
If training diverges (NaN/inf or a loss far above the initial one), every row has status
``diverged`` and the reason as error.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from harness.registry import register_task
from harness.tasks.base import added_setting, metric_row
from harness.tasks.training import (
    TrainingTask,
    TrainParams,
    build_for_training,
    diverged_rows,
    save_trained,
    train_config,
)

if TYPE_CHECKING:
    import torch

    from harness.sweep.cell import Cell

#: test sets use this seed, whatever the cell's seed (training data uses the cell's seed)
TEST_SEED = 1_000_003


class RecallParams(TrainParams):
    n_train: int = Field(8192, ge=1)
    n_test: int = Field(256, ge=1)
    #: lengths to score the trained model at (default: the cell's seq_len)
    eval_lengths: list[int] | None = None
    eval_batch_size: int = Field(64, ge=1)
    #: token vocabulary of the generator (default: the model's vocab_size; must not exceed it)
    vocab_size: int | None = Field(None, ge=4)
    cache: bool = True  # cache generated data on disk (harness.data.cache)

    @field_validator("eval_lengths")
    @classmethod
    def _lengths(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if not v:
                raise ValueError("eval_lengths must not be empty (omit it to use the cell's seq_len)")
            if any(x < 1 for x in v):
                raise ValueError(f"eval_lengths must be positive, got {v}")
        return v


def _batches(data: dict[str, torch.Tensor], n: int, bs: int):
    for i in range(0, n, bs):
        yield {k: v[i:i + bs] for k, v in data.items()}


def score_recall(model, data: dict[str, torch.Tensor], batch_size: int = 64,
                 device: str | None = None) -> torch.Tensor:
    """Per-sequence recall: the fraction of a sequence's answer groups whose every token is the
    model's argmax (teacher forcing). ``data`` has inputs, targets, groups [N, T]."""
    import torch

    from harness.data import IGNORE

    device = device or str(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        n = data["inputs"].shape[0]
        for b in _batches(data, n, batch_size):
            inputs = b["inputs"].to(device)
            pred = model(inputs).argmax(-1).cpu()
            targets, groups = b["targets"], b["groups"]
            scored = targets != IGNORE
            wrong = scored & (pred != targets)
            G = int(groups.max()) + 1 if scored.any() else 1
            idx = groups.clamp(min=0)
            n_wrong = torch.zeros(len(idx), G, dtype=torch.long).scatter_add_(1, idx, wrong.long())
            n_tok = torch.zeros(len(idx), G, dtype=torch.long).scatter_add_(1, idx, scored.long())
            present = n_tok > 0
            right = present & (n_wrong == 0)
            out.append(right.sum(1).double() / present.sum(1).clamp(min=1).double())
    model.train(was_training)
    return torch.cat(out)


def drop_overlap(train: dict[str, torch.Tensor], tests: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Remove training sequences whose inputs equal any test sequence's inputs (same length)."""
    import torch

    T = train["inputs"].shape[1]
    seen = {bytes(row.numpy().tobytes()) for t in tests if t["inputs"].shape[1] == T for row in t["inputs"]}
    if not seen:
        return train
    keep = torch.tensor([bytes(row.numpy().tobytes()) not in seen for row in train["inputs"]], dtype=torch.bool)
    if bool(keep.all()):
        return train
    return {k: v[keep] for k, v in train.items()}


class _RecallTask(TrainingTask):
    """Train once at cell.seq_len, then score per subtask and eval length."""

    Params = RecallParams

    # subclasses: the generator
    def subtasks(self, p) -> list[str]:
        raise NotImplementedError

    def make(self, p, vocab: int, seq_len: int, subtask: str, n: int, seed: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def make_train(self, p, vocab: int, seq_len: int, n: int, seed: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def make_probe(self, p, vocab: int, seq_len: int, n: int, seed: int) -> dict[str, torch.Tensor]:
        """The held-out early-stop probe: like the training data unless a task says otherwise."""
        return self.make_train(p, vocab, seq_len, n, seed)

    def validate_generator(self, p, vocab: int, seq_len: int) -> None:
        raise NotImplementedError

    def reference_levels(self, p, vocab: int, seq_len: int, subtask: str) -> tuple[float, float]:
        """(chance, plateau) of recall_acc for one subtask at one length."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------
    def _vocab(self, p, cell: Cell) -> int:
        model_vocab = int(cell.model["vocab_size"])
        vocab = p.vocab_size or model_vocab
        if vocab > model_vocab:
            raise ValueError(f"{self.name}: the generator's vocab_size {vocab} exceeds the model's vocab_size "
                             f"{model_vocab}")
        return vocab

    def check(self, cell: Cell) -> None:
        p = self.params(cell)
        vocab = self._vocab(p, cell)
        for length in sorted({cell.seq_len, *(p.eval_lengths or [])}):
            self.validate_generator(p, vocab, length)

    def run(self, cell: Cell) -> list[dict[str, Any]]:
        from harness.runtime.train import train

        p = self.params(cell)
        vocab = self._vocab(p, cell)
        lengths = list(dict.fromkeys(p.eval_lengths or [cell.seq_len]))
        names = self.subtasks(p)
        tests = {(s, L): self.make(p, vocab, L, s, p.n_test, TEST_SEED + 7919 * L + i)
                 for i, s in enumerate(names) for L in lengths}
        train_data = self.make_train(p, vocab, cell.seq_len, p.n_train, cell.seed)
        train_data = drop_overlap(train_data, list(tests.values()))
        # early-stop probe: a held-out set at the training length (its own seed, never the test set)
        probe = None
        if p.early_stop_acc is not None:
            probe = {k: v for k, v in self.make_probe(p, vocab, cell.seq_len, min(p.n_test, 256),
                                                         TEST_SEED - 1).items() if k != "subtask"}

        model, device, amp = build_for_training(cell)
        cfg = train_config(p, cell, amp)
        eval_fn = (lambda m: float(score_recall(m, probe, p.eval_batch_size, device).mean())) if probe else None
        train_data = {k: v for k, v in train_data.items() if k in ("inputs", "targets")}
        result = train(model, train_data, cfg, eval_fn=eval_fn, device=device)

        metrics = [("recall_acc", self.row_subtask(s), L) for s in names for L in lengths]
        if not result.ok:
            return diverged_rows(result, metrics)
        rows = []
        for s in names:
            for L in lengths:
                acc = score_recall(model, tests[(s, L)], p.eval_batch_size, device)
                rows.append(metric_row("recall_acc", float(acc.mean()), subtask=self.row_subtask(s),
                                       context_len=L, n_repeats=int(acc.numel())))
                for name, level in zip(("recall_chance", "recall_plateau"), self.reference_levels(p, vocab, L, s)):
                    rows.append(metric_row(name, level, subtask=self.row_subtask(s), context_len=L))
        rows.append(metric_row("final_loss", result.final_loss))
        rows.append(metric_row("train_steps", float(result.steps)))
        rows.append(metric_row("train_s", result.wall_s))
        save_trained(model, p, cell, {"final_loss": result.final_loss, "train_steps": result.steps})
        return rows

    def row_subtask(self, subtask: str) -> str:
        return subtask


# ---------------------------------------------------------------------------------------------


@register_task("mqar")
class MQAR(_RecallTask):
    """Zoology's multi-query associative recall; trains on the answer positions only."""

    class Params(RecallParams):
        num_kv_pairs: int = Field(8, ge=1)  # the pairs per test sequence (and per training one by default)
        #: train on an even mix of these pair counts (Zoology trains on a mix): the easy ones teach
        #: a model to bind keys to values early, so it leaves the 1/num_kv_pairs plateau sooner;
        #: the test sets and the early-stop probe keep num_kv_pairs. Default: num_kv_pairs only.
        train_kv_pairs: list[int] | None = added_setting(None)
        alpha: float = Field(0.01, gt=0)  # power-law exponent of the query gaps (Zoology's power_a)
        random_non_queries: bool = True

        @field_validator("train_kv_pairs")
        @classmethod
        def _pair_counts(cls, v: list[int] | None) -> list[int] | None:
            if v is not None and (not v or any(k < 1 for k in v)):
                raise ValueError(f"train_kv_pairs must be a non-empty list of positive counts, got {v}")
            return v

    def subtasks(self, p) -> list[str]:
        return ["mqar"]

    def _cfg(self, p, vocab: int, seq_len: int, num_kv_pairs: int | None = None):
        from harness.data.mqar import MQARConfig

        return MQARConfig(vocab_size=vocab, seq_len=seq_len, num_kv_pairs=num_kv_pairs or p.num_kv_pairs,
                          alpha=p.alpha, random_non_queries=p.random_non_queries)

    def validate_generator(self, p, vocab: int, seq_len: int) -> None:
        for k in dict.fromkeys([p.num_kv_pairs, *(p.train_kv_pairs or [])]):
            self._cfg(p, vocab, seq_len, k).validate()

    def reference_levels(self, p, vocab, seq_len, subtask):
        from harness.data.mqar import reference_levels

        return reference_levels(self._cfg(p, vocab, seq_len))

    def make(self, p, vocab, seq_len, subtask, n, seed):
        from harness.data.mqar import mqar_dataset

        return mqar_dataset(self._cfg(p, vocab, seq_len), n, seed, cache=p.cache)

    def make_train(self, p, vocab, seq_len, n, seed):
        import torch

        from harness.data.mqar import mqar_dataset

        counts = p.train_kv_pairs or [p.num_kv_pairs]
        # an even split (the first parts take the remainder); the trainer samples in random order
        parts = [mqar_dataset(self._cfg(p, vocab, seq_len, k), n // len(counts) + (i < n % len(counts)),
                              seed + 104_729 * i, cache=p.cache) for i, k in enumerate(counts)]
        return {key: torch.cat([d[key] for d in parts]) for key in parts[0]}

    def make_probe(self, p, vocab, seq_len, n, seed):
        return self.make(p, vocab, seq_len, "mqar", n, seed)


@register_task("niah")
class NIAH(_RecallTask):
    """RULER-style needle in a haystack; one model is trained on an even mix of the subtasks."""

    class Params(RecallParams):
        # Defaults: chosen so that a small Transformer learns every subtask (key next to its
        # value, all needles at depth 0, 1-token values); at RULER's layout and random depths it
        # stays on the copy-any-needle plateau. The trials: docs/training.md#niah-defaults; the
        # check: tests/test_niah_learns.py.
        steps: int = Field(1500, ge=1)
        subtasks: list[Literal["single", "multikey", "multiquery", "multivalue"]] = \
            ["single", "multikey", "multiquery", "multivalue"]
        key_len: int = Field(1, ge=1)
        value_len: int = Field(1, ge=1)
        n_needles: int = Field(4, ge=1)  # multikey / multiquery
        n_queries: int = Field(2, ge=1)  # multiquery
        n_values: int = Field(2, ge=1)  # multivalue
        #: needle depth in [0, 1] (fraction of the haystack); null = RULER's random depths (harder:
        #: not learned by the small Transformer within 1,500 steps, see above)
        depth: float | None = Field(0.0, ge=0, le=1)
        haystack: Literal["repeat", "random"] = "repeat"
        n_filler: int = Field(16, ge=1)
        sentence_len: int = Field(4, ge=1)
        #: needle NEEDLE IS k v SEP, query QUERY ANSWER k v (the lookup is one induction step, as
        #: MQAR); false = RULER's order NEEDLE k IS v SEP, QUERY k ANSWER v (harness.data.niah)
        key_next_to_value: bool = True

        @field_validator("subtasks")
        @classmethod
        def _nonempty(cls, v: list[str]) -> list[str]:
            if not v:
                raise ValueError("subtasks must not be empty")
            return list(dict.fromkeys(v))

    def subtasks(self, p) -> list[str]:
        return list(p.subtasks)

    def row_subtask(self, subtask: str) -> str:
        return f"niah_{subtask}"

    def _cfg(self, p, vocab: int, seq_len: int, subtask: str):
        from harness.data.niah import NIAHConfig

        return NIAHConfig(vocab_size=vocab, seq_len=seq_len, subtask=subtask, key_len=p.key_len,
                          value_len=p.value_len, n_needles=p.n_needles, n_queries=p.n_queries,
                          n_values=p.n_values, depth=p.depth, haystack=p.haystack, n_filler=p.n_filler,
                          sentence_len=p.sentence_len, key_next_to_value=p.key_next_to_value)

    def validate_generator(self, p, vocab: int, seq_len: int) -> None:
        for s in p.subtasks:
            self._cfg(p, vocab, seq_len, s).validate()

    def reference_levels(self, p, vocab, seq_len, subtask):
        return self._cfg(p, vocab, seq_len, subtask).reference_levels()

    def make(self, p, vocab, seq_len, subtask, n, seed):
        from harness.data.niah import niah_dataset

        return niah_dataset(self._cfg(p, vocab, seq_len, subtask), n, seed, cache=p.cache)

    def make_train(self, p, vocab, seq_len, n, seed):
        from harness.data.niah import niah_mixture

        base = self._cfg(p, vocab, seq_len, p.subtasks[0])
        return niah_mixture(base, list(p.subtasks), n, seed, cache=p.cache)


__all__ = ["MQAR", "NIAH", "RecallParams", "TrainParams", "score_recall", "drop_overlap", "TEST_SEED"]
