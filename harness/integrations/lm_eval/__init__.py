"""lm-evaluation-harness: our models as an lm-eval model (`adapter`), the `harness-lm-eval`
command (`cli`) and the project's local tasks (`tasks/`)."""
