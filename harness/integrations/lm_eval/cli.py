"""lm-eval's own command line, with our model registered: ``python -m harness.integrations.lm_eval.cli ARGS``.

lm-eval 0.4 discovers models only through its built-in table (no entry points / plug-ins), so a
plain ``lm_eval --model harness`` cannot see a model that lives outside lm-eval. This wrapper
imports harness.integrations.lm_eval.adapter (which registers `HarnessLM` as ``harness`` in lm-eval's model
registry) and then hands the command line, unchanged, to lm-eval's `cli_evaluate`::

    python -m harness.integrations.lm_eval.cli --model harness --model_args pretrained=results/ckpt \\
        --tasks harness_toy_mc --include_path harness/lm_eval_tasks --limit 10
    python -m harness.integrations.lm_eval.cli --model harness \\
        --model_args pretrained=m-a-p/340M-20B-GatedDeltaNet-hybrid-3-1,device=cuda,dtype=bfloat16 \\
        --tasks arc_easy,piqa

``--include_path`` defaults to nothing, as in lm-eval; the repository's tasks live in
harness/lm_eval_tasks (`harness.integrations.lm_eval.tasks.TASKS_DIR`). Like the rest of the harness it keeps
Hugging Face libraries offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE = 1)
unless HARNESS_ONLINE=1 is set; variables already set in the environment win.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> None:
    from harness.integrations.hub import default_offline_env

    default_offline_env()  # before datasets / huggingface_hub are imported: they read it once
    from lm_eval.__main__ import cli_evaluate

    import harness.integrations.lm_eval.adapter  # noqa: F401  (registers --model harness)

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
