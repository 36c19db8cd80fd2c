"""lm-eval's own command line, with our model registered: ``python -m harness.integrations.lm_eval.cli ARGS``.

lm-eval 0.4 discovers models only through its built-in table (no entry points / plug-ins), so a
plain ``lm_eval --model harness`` cannot see a model that lives outside lm-eval. This wrapper
imports harness.integrations.lm_eval.adapter (which registers `HarnessLM` as ``harness`` in lm-eval's model
registry) and then hands the command line, unchanged, to lm-eval's `cli_evaluate`::

    harness-lm-eval --model harness --model_args pretrained=results/ckpt --tasks harness_toy_mc --limit 10
    python -m harness.integrations.lm_eval.cli --model harness \\
        --model_args pretrained=m-a-p/340M-20B-GatedDeltaNet-hybrid-3-1,device=cuda,dtype=bfloat16 \\
        --tasks arc_easy,piqa

The project's own tasks (harness/integrations/lm_eval/tasks: `harness_toy_mc`, ...) are always on
lm-eval's task path, before any ``--include_path`` of yours (which may override them). Like the
rest of the harness it keeps Hugging Face libraries offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE /
TRANSFORMERS_OFFLINE = 1) unless HARNESS_ONLINE=1 is set; variables already set in the
environment win.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from harness._lazy import import_extra


def main(argv: Sequence[str] | None = None) -> None:
    from harness.integrations.hub import default_offline_env

    default_offline_env()  # before datasets / huggingface_hub are imported: they read it once
    try:
        cli_evaluate = import_extra("lm_eval.__main__", "lm-eval", "harness-lm-eval").cli_evaluate
    except ImportError as exc:
        sys.exit(f"error: {exc}")  # exit 1 with the pip command, not a traceback

    import harness.integrations.lm_eval.adapter  # noqa: F401  (registers --model harness)

    include_project_tasks()
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


def include_project_tasks() -> None:
    """Put the project's task folder on every lm-eval TaskManager's include path (lm-eval's
    command line takes one --include_path; ours comes first, so a user's path can override)."""
    from lm_eval.tasks import TaskManager

    from harness.integrations.lm_eval.tasks import TASKS_DIR

    original = TaskManager.__init__
    if getattr(original, "_with_project_tasks", False):
        return

    def __init__(self, verbosity=None, include_path=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        paths = [] if include_path is None else (
            list(include_path) if isinstance(include_path, (list, tuple)) else [include_path])
        if str(TASKS_DIR) not in map(str, paths):
            paths.insert(0, str(TASKS_DIR))
        original(self, verbosity, paths, *args, **kwargs)

    __init__._with_project_tasks = True  # type: ignore[attr-defined]
    TaskManager.__init__ = __init__  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
