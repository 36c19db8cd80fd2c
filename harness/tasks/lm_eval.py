"""`lm_eval`: run lm-evaluation-harness tasks on a cell's model, in-process.

The model is, in order of precedence:
- `checkpoint`: a harness checkpoint directory (harness.model.checkpoint), an fla / Hugging Face
  checkpoint directory, or a Hub id such as ``m-a-p/340M-20B-GatedDeltaNet-hybrid-3-1``
  (converted by harness.integrations.convert; our SDPA attention replaces fla's flash-attn layers, so it runs
  on CPU too). The cell's model columns must describe the checkpoint: `check` and `run` refuse a
  cell whose variant/layout/size disagree with the checkpoint's config, and
  `LmEval.model_from_params` gives the model a suite should put in such a cell.
- `checkpoint: {from: lm}` in a suite: the model another cell of the same sweep trained (the
  `lm` cell with the same variant, layout, seed, ... ; docs/suites.md, "Train, then evaluate").
  The suite gives the cell that cell's model and the producer's id in its params; the runner
  trains the producer first and passes its checkpoint's path in.
- no checkpoint: the cell's ModelConfig, freshly initialised with the cell's seed (untrained:
  chance-level scores; a plumbing check, or a baseline).

`tasks` are lm-eval task (or group / tag) names. The repository's own task YAMLs
(harness/integrations/lm_eval/tasks, over JSONL files shipped in the package) are always on the include path;
`include_path` adds more directories. The cell's `seq_len` is the model's context length for
lm-eval (`max_length`: longer inputs are truncated from the left, rolling perplexity uses windows
of this size).

Offline by default: unless the environment sets HARNESS_ONLINE=1, the run sets
HF_DATASETS_OFFLINE / HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE=1 (and the matching constants of
Hugging Face libraries already imported), so a dataset or checkpoint that is not in the local
cache is a clear error, never a download. The paper's suite (suites/paper-checkpoints.yaml) needs
HARNESS_ONLINE=1 the first time, to fetch checkpoints and datasets.

Rows: one per lm-eval metric, ``lm_eval/<task>/<metric>`` (``lm_eval/<task>/<metric>/<filter>``
for a filter other than ``none``), value as lm-eval reports it, its standard error (when lm-eval
computes one) in `spread`, `subtask` = the lm-eval task or group name. RULER-style metrics named
by a context length (``4096``) become ``lm_eval/<task>/score`` with `context_len` = 4096.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from harness._lazy import import_extra
from harness.integrations.hub import ONLINE_ENV, hf_offline, online
from harness.registry import register_task
from harness.sweep.cell import is_pending_input
from harness.tasks.base import Task, metric_row

if TYPE_CHECKING:
    from harness.sweep.cell import Cell

#: model fields that must agree between a cell and its checkpoint (they are result columns)
#: metadata keys lm-eval's synthetic tasks read a tokenizer name from
TOKENIZER_KEYS = ("tokenizer", "pretrained", "model")
IDENTITY_FIELDS = ("variant", "layout", "n_layers", "d_model", "n_heads", "vocab_size")


def repo_tasks_dir() -> Path:
    from harness.integrations.lm_eval.tasks import TASKS_DIR

    return TASKS_DIR


def _local_config(checkpoint: str) -> dict[str, Any] | None:
    """A checkpoint's config.json if it is readable without the network (a local directory, or
    the Hugging Face cache), else None."""
    p = Path(checkpoint).expanduser()
    if p.is_dir():
        cfg = p / "config.json"
        return json.loads(cfg.read_text()) if cfg.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        hit = try_to_load_from_cache(repo_id=checkpoint, filename="config.json")
    except Exception:  # an invalid repo id and the like
        return None
    return json.loads(Path(hit).read_text()) if isinstance(hit, str) else None


def _model_dict_from_config(config: dict[str, Any]) -> dict[str, Any]:
    from harness.integrations.convert import fla_config_to_model_config
    from harness.model.config import ModelConfig

    if "harness_config" in config:
        return ModelConfig.from_dict(config["harness_config"]).to_dict()
    return fla_config_to_model_config(config).to_dict()


def _canonical_model(model: dict[str, Any]) -> dict[str, Any]:
    from harness.model.resolve import resolve_model
    from harness.sweep.cell import canonical

    return canonical(resolve_model(dict(model)))


def _mismatch(cell_model: dict[str, Any], ckpt_model: dict[str, Any]) -> list[str]:
    """Fields where a cell's model (its result columns and model_config) differs from what the
    checkpoint is; identity fields first."""
    want = _canonical_model(ckpt_model)
    have = _canonical_model(cell_model)
    keys = list(IDENTITY_FIELDS) + sorted(k for k in set(want) | set(have) if k not in IDENTITY_FIELDS)
    return [f"{k}: cell {have.get(k)!r} vs checkpoint {want.get(k)!r}" for k in keys if have.get(k) != want.get(k)]


@register_task("lm_eval")
class LmEval(Task):
    """lm-evaluation-harness tasks on the cell's model or a checkpoint (see the module docstring)."""

    class Params(Task.Params):
        #: lm-eval task, group or tag names, e.g. [arc_easy, piqa] or [harness_toy_mc]
        tasks: list[str] = Field(min_length=1)
        #: extra directories of lm-eval task YAMLs (the repository's own are always included)
        include_path: str | None = None
        #: a harness checkpoint dir, an fla / HF checkpoint dir or a Hub id; None: the cell's model, untrained.
        #: In a suite, `{from: <task>}`: the checkpoint another cell of the sweep trains (harness.sweep.references)
        checkpoint: str | None = None
        #: tokenizer: None = byte-level for harness models, the checkpoint's own for fla ones; or "byte" / a
        #: path / Hub id
        tokenizer: str | None = None
        #: examples per task (an int, or a fraction < 1); None = all
        limit: int | float | None = None
        num_fewshot: int | None = None
        batch_size: int = Field(default=8, ge=1)
        max_gen_toks: int = Field(default=256, ge=1)
        #: bootstrap resamples for the standard error of non-mean metrics (perplexity); 0 = none
        bootstrap_iters: int = Field(default=1000, ge=0)
        #: lm-eval task metadata, e.g. {max_seq_lengths: [4096]} for RULER
        metadata: dict[str, Any] = Field(default_factory=dict)

    # -- model resolution ------------------------------------------------------------------
    @classmethod
    def model_from_params(cls, params: dict[str, Any]) -> dict[str, Any] | None:
        """The ModelConfig (dict) a cell with these params must carry: the checkpoint's own
        (variant, layout from fla's attn.layers, sizes), or None without a checkpoint. Reads the
        checkpoint's config.json (fetching only that file when HARNESS_ONLINE=1). Raises
        ValueError when it cannot be read offline."""
        checkpoint = params.get("checkpoint")
        if not checkpoint:
            return None
        config = _local_config(checkpoint)
        if config is None:
            from harness.integrations.hub import local_checkpoint_problem

            problem = local_checkpoint_problem(checkpoint)  # a missing path: no use going online
            if problem:
                raise ValueError(problem)
            if not online():
                raise ValueError(
                    f"checkpoint {checkpoint!r}: its config.json is not available offline; set {ONLINE_ENV}=1 "
                    "to fetch it (or download the checkpoint into the Hugging Face cache / a local directory)"
                )
            from harness.integrations.convert import read_fla_config

            _, config = read_fla_config(checkpoint)
        return _model_dict_from_config(config)

    def check(self, cell: Cell) -> None:
        import importlib.util

        if importlib.util.find_spec("lm_eval") is None:
            raise ValueError("the lm_eval task needs lm-evaluation-harness: pip install -e '.[lm-eval]'")
        p = self.params(cell)
        if p.checkpoint and is_pending_input(p.checkpoint):
            return  # another cell's checkpoint, not written yet: the suite gave the cell its model
        if p.checkpoint:
            config = _local_config(p.checkpoint)
            if config is not None:  # otherwise it is checked when the cell runs
                try:
                    diffs = _mismatch(dict(cell.model), _model_dict_from_config(config))
                except Exception as exc:
                    raise ValueError(f"checkpoint {p.checkpoint!r}: {exc}") from None
                if diffs:
                    raise ValueError(self._mismatch_message(p.checkpoint, diffs, config))
        elif cell.model.get("vocab_size", 256) < 256:
            raise ValueError("lm_eval without a checkpoint scores bytes: the model needs vocab_size >= 256")

    @staticmethod
    def _mismatch_message(checkpoint: str, diffs: list[str], config: dict[str, Any]) -> str:
        model = _canonical_model(_model_dict_from_config(config))
        return (
            f"checkpoint {checkpoint!r} does not match the cell's model ({'; '.join(diffs)}); the result "
            f"columns would mislabel it. The cell's model must be the checkpoint's (LmEval.model_from_params): "
            f"{json.dumps(model, sort_keys=True)}"
        )

    # -- running ---------------------------------------------------------------------------
    def run(self, cell: Cell) -> list[dict[str, Any]]:
        p = self.params(cell)
        with hf_offline(not online()):
            return self._run(cell, p)

    def _build_lm(self, cell: Cell, p: LmEval.Params):
        import torch

        from harness.integrations.lm_eval.adapter import (
            ByteTokenizer,
            HarnessLM,
            load_model_and_tokenizer,
        )

        dtype = cell.torch_dtype()
        kind = "untrained"
        if p.checkpoint:
            from harness.integrations.convert import read_fla_config

            _, config = read_fla_config(p.checkpoint)  # before loading any weights
            diffs = _mismatch(dict(cell.model), _model_dict_from_config(config))
            if diffs:
                raise ValueError(self._mismatch_message(p.checkpoint, diffs, config))
            model, tok, kind = load_model_and_tokenizer(p.checkpoint, p.tokenizer, cell.device, dtype)
        else:
            from harness.model.lm import build_model

            torch.manual_seed(cell.seed)
            model = build_model(cell.model_config(), device=cell.device, dtype=dtype, backend="torch")
            tok = None if p.tokenizer in (None, "byte") else p.tokenizer
            if tok is not None:
                from harness.integrations.lm_eval.adapter import load_hf_tokenizer

                tok = load_hf_tokenizer(tok)
            else:
                tok = ByteTokenizer(model.cfg.vocab_size)
        lm = HarnessLM(
            model=model, tokenizer=tok, device=cell.device, dtype=dtype, batch_size=p.batch_size,
            max_length=cell.seq_len, max_gen_toks=p.max_gen_toks, kernel_backend=cell.backend,
        )
        lm.kind, lm.pretrained = kind, p.checkpoint
        return lm

    def _run(self, cell: Cell, p: LmEval.Params) -> list[dict[str, Any]]:
        lm_eval = import_extra("lm_eval", "lm-eval", "the lm_eval task")

        lm = self._build_lm(cell, p)
        include = [str(repo_tasks_dir())] + ([p.include_path] if p.include_path else [])
        metadata = dict(p.metadata)
        source = getattr(lm.model, "source_dir", None)
        if lm.kind == "fla" and source and not any(k in metadata for k in TOKENIZER_KEYS):
            # synthetic tasks (RULER) size their prompts with a tokenizer named in the metadata
            metadata["tokenizer"] = str(source)
        manager = task_manager(tuple(include), tuple(p.tasks), json.dumps(metadata, sort_keys=True))
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(p.tasks),
            num_fewshot=p.num_fewshot,
            limit=p.limit,
            bootstrap_iters=p.bootstrap_iters,
            log_samples=False,
            task_manager=manager,
            random_seed=cell.seed,
            numpy_random_seed=cell.seed,
            torch_random_seed=cell.seed,
            fewshot_random_seed=cell.seed,
            metadata=metadata or None,
        )
        if results is None:  # a non-zero rank in a distributed run; we never run that way
            raise RuntimeError("lm-eval returned no results")
        rows = results_to_rows(results)
        for row in rows:
            row["backend"] = lm.kernel_backend
            row["device"] = str(lm.device)
        if not rows:
            raise RuntimeError(f"lm-eval produced no numeric metric for tasks {p.tasks}")
        return rows


@functools.lru_cache(maxsize=8)
def task_manager(include: tuple[str, ...], tasks: tuple[str, ...], metadata_json: str):
    """lm-eval's TaskManager, cached per process (indexing lm-eval's ~10k built-in task YAMLs takes
    ~15 s). When every requested name is one of the included directories' tasks, the built-in
    index is skipped altogether."""
    TaskManager = import_extra("lm_eval.tasks", "lm-eval", "the lm_eval task").TaskManager

    metadata = json.loads(metadata_json) or None
    local = TaskManager(include_path=list(include), include_defaults=False, metadata=metadata)
    if all(local.match_tasks([t]) for t in tasks):
        return local
    return TaskManager(include_path=list(include), metadata=metadata)


def results_to_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """lm-eval's `results["results"]` -> our rows (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    for task, metrics in results.get("results", {}).items():
        stderr: dict[tuple[str, str], Any] = {}
        values: list[tuple[str, str, Any]] = []
        for key, value in metrics.items():
            if key == "alias" or "," not in key:
                continue
            name, filt = key.split(",", 1)
            if name.endswith("_stderr"):
                stderr[(name[: -len("_stderr")], filt)] = value
            else:
                values.append((name, filt, value))
        for name, filt, value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                continue
            context_len = None
            metric = name
            if name.isdigit():  # RULER reports its score under the context length
                context_len, metric = int(name), "score"
            full = f"lm_eval/{task}/{metric}" + (f"/{filt}" if filt not in ("none", "") else "")
            se = stderr.get((name, filt))
            finite = isinstance(se, (int, float)) and not isinstance(se, bool) and math.isfinite(float(se))
            spread = float(se) if finite else None
            rows.append(metric_row(full, float(value), subtask=task, context_len=context_len, spread=spread))
    return rows
