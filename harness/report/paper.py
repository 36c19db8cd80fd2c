"""The paper's published numbers (harness/report/paper_numbers.json), table by table.

Everything returned here is the paper's, never ours; each table carries its `source` label
(e.g. "paper (1.3B)") which the report prints next to the numbers.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

PAPER_FILE = Path(__file__).with_name("paper_numbers.json")


@lru_cache(maxsize=1)
def paper_data() -> dict:
    with open(PAPER_FILE, encoding="utf-8") as fh:
        return json.load(fh)


def table(name: str) -> dict:
    return paper_data()["tables"][name]


def source(name: str) -> str:
    return table(name)["source"]


def best_ratio_rows(name: str) -> dict[str, dict]:
    """variant -> row of a best-ratio table."""
    return {r["variant"]: r for r in table(name)["rows"]}


def lm_eval_task_names() -> dict[str, str]:
    """lm-eval task name -> the paper's column header."""
    return dict(paper_data()["lm_eval_tasks"])


def ruler_column_for(subtask: str) -> str | None:
    """The paper's RULER column for one of our recall subtask names, if there is one."""
    for col, names in paper_data()["ruler_columns"].items():
        if subtask in names:
            return col
    return None


def flops_formulas() -> list[dict]:
    return list(table("mixer_flops")["rows"])
