"""Loaders for the repository's lm-eval tasks: read the JSONL next to this file (offline)."""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: lm-eval loads these (its `!function` task entries), never the base install
REQUIRES_EXTRA = "lm-eval"


def _load(name: str):
    import datasets

    rows = [json.loads(line) for line in (HERE / "data" / name).read_text().splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_toy_mc(**kwargs):
    return _load("toy_mc.jsonl")


def load_toy_lambada(**kwargs):
    return _load("toy_lambada.jsonl")


def load_toy_ppl(**kwargs):
    return _load("toy_ppl.jsonl")


def load_toy_gen(**kwargs):
    return _load("toy_gen.jsonl")
