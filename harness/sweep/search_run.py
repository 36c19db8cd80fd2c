"""Running a placement search (harness.sweep.search): expand what the stored table allows, run it
through the ordinary sweep driver, read the table again, and repeat while the search grows; a
rerun recomputes every choice from the stored table and runs only what is missing."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.sweep.cell import Cell
from harness.sweep.expand import expand_cells
from harness.sweep.schema import Suite
from harness.sweep.store import ResultsError, load_results

__all__ = ["stored_table", "stored_cells", "run_search"]


def stored_table(results_dir: Path) -> pd.DataFrame | None:
    """The table stored in `results_dir`, None when there is none yet."""
    if not Path(results_dir).is_dir():
        return None
    try:
        with warnings.catch_warnings():  # a damaged cell file is said by the sweep itself
            warnings.simplefilter("ignore")
            return load_results(results_dir)
    except (FileNotFoundError, ResultsError, ValueError):
        return None


def stored_cells(suite: Suite, results_dir: Path, notes: list[str]) -> list[Cell]:
    """The search's cells given what `results_dir` stores; [] when it stores nothing."""
    table = stored_table(results_dir)
    return [] if table is None else expand_cells(suite, notes, table)


def run_search(suite: Suite, results_dir: Path, run: Callable[[list[Cell]], Any],
               say: Callable[[str], None] = print, said: Iterable[str] = ()) -> Any:
    """Run the search's rounds: each pass expands the cells the stored table allows (the rounds
    decided so far, the next round, the fixed policies) and `run`s them (the driver skips stored
    cells); it stops when a pass adds no cell, or a run is interrupted or cannot write. Returns
    the last run's summary (its statuses cover every cell of the search). A note is said once:
    not again when a pass repeats it, nor when it is in `said` (printed as the suite loaded)."""
    said = set(said)
    seen: set[str] | None = None
    summary = None
    for _ in range(suite.placement_search.attention_layers + 2):  # one pass per round, and one to see the end
        notes: list[str] = []
        cells = expand_cells(suite, notes, stored_table(results_dir))
        ids = {c.cell_id for c in cells}
        if ids == seen:
            break
        for note in notes:
            if note not in said:
                say(note)
                said.add(note)
        summary = run(cells)
        if getattr(summary, "interrupted", False) or getattr(summary, "error", None):
            break
        seen = ids
    return summary
