"""The committed example reports (reports/quickstart, reports/cpu-recall, reports/cpu-recall-hard,
reports/cpu-recall-new-mixers, reports/cpu-hybrid-forms, reports/cpu-placement,
reports/cpu-placement-search, reports/cpu-lm and the mixer benchmark
reports/benchmarks/cpu-mixer) are what the current code makes of their tables, and their tables
hold every cell of their suites."""
import os
from pathlib import Path

import pytest

from harness.report import build_report

ROOT = Path(__file__).resolve().parents[1]
#: committed example -> the suite it ran
EXAMPLES = {"quickstart": "quickstart", "cpu-recall": "cpu-recall", "cpu-recall-hard": "cpu-recall-hard",
            "cpu-recall-new-mixers": "cpu-recall-new-mixers", "cpu-hybrid-forms": "cpu-hybrid-forms",
            "cpu-placement": "cpu-placement", "cpu-placement-search": "cpu-placement-search",
            "cpu-lm": "cpu-lm", "benchmarks/cpu-mixer": "cpu-mixer"}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_committed_example_report_is_up_to_date(name, tmp_path, monkeypatch):
    example = ROOT / "reports" / name
    monkeypatch.chdir(ROOT)  # the report names its source relative to where it is built
    out = build_report(Path(f"reports/{name}/results.parquet"), tmp_path / name)
    fresh = out.read_text().replace(str(tmp_path / name), f"reports/{name}")
    committed = (example / "report.md").read_text()
    assert fresh == committed, (
        f"reports/{name}/report.md is stale against the report code: regenerate it with "
        f"`harness report reports/{name}/results.parquet --out reports/{name}`")
    figures = sorted(p.name for p in (example / "figures").iterdir())
    assert figures == sorted(p.name for p in (out.parent / "figures").iterdir())
    assert all(os.path.getsize(example / "figures" / f) > 0 for f in figures)


@pytest.mark.parametrize("name, suite", list(EXAMPLES.items()))
def test_committed_tables_hold_every_cell_of_their_suite(name, suite):
    """Cell ids are stable: every cell the suite expands to today is in its committed table (a
    change to identity, defaults or canonical forms would rename cells and strand results)."""
    import pandas as pd

    from harness.sweep import expand_cells, find_suite, load_suite

    table = pd.read_parquet(ROOT / "reports" / name / "results.parquet")
    # a placement search expands round by round from its stored table: every round it reached
    ids = {c.cell_id for c in expand_cells(load_suite(find_suite(suite)), table=table)}
    stored = set(table["cell_id"])
    assert ids <= stored, f"{len(ids - stored)} of {len(ids)} cells of suites/{suite}.yaml are not in reports/{name}"
