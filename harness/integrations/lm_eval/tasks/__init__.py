"""lm-eval task YAMLs kept in the repository, over local JSONL files (no download).

`harness.tasks.lm_eval` always adds this directory to lm-eval's include path, so its tasks
are found by name; from lm-eval's CLI pass ``--include_path`` with `TASKS_DIR`. The tag
``harness_toy`` runs all four:

- ``harness_toy_mc``: multiple choice (loglikelihood of each choice; acc, acc_norm);
- ``harness_toy_lambada``: last-word prediction, LAMBADA-style (loglikelihood; acc, perplexity);
- ``harness_toy_ppl``: document perplexity (loglikelihood_rolling; word/byte perplexity, bits per byte);
- ``harness_toy_gen``: greedy completion (generate_until; exact_match).

They are plumbing checks, tiny on purpose; their numbers mean nothing about a model.
"""
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
