"""The sweep driver: pick the cells not done, run them on an executor, store each as it finishes,
rebuild the table. Interrupting it (Ctrl-C, SIGTERM) keeps every finished cell; a results
directory it must not write into is refused before anything runs."""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from harness.sweep.cell import Cell
from harness.sweep.dependencies import (
    blocked_reason,
    checkpoint_path,
    checkpoints_dir,
    in_waves,
    with_checkpoint_dirs,
    with_missing_producers,
)
from harness.sweep.executors import make_executor
from harness.sweep.locks import Claims, shard_of
from harness.sweep.progress import ELSEWHERE, Progress, SweepSummary
from harness.sweep.repair import check_can_write, clean_stale_tmp, repair, set_aside_damaged_table
from harness.sweep.results import OK
from harness.sweep.run_cell import dependency_rows, make_context
from harness.sweep.store import (
    RESULTS_FILE,
    ResultsError,
    cell_path,
    cell_statuses,
    check_writable_results,
    consolidate,
    os_error_text,
    read_cells,
    write_cell,
)


def _cell_status(rows: list[dict[str, Any]]) -> str:
    bad = [r.get("status") or "failed" for r in rows if r.get("status") != OK]
    return bad[0] if bad else OK


def select_cells(cells: list[Cell], done: dict[str, str], retry_failed: bool = False) -> tuple[list[Cell], int, int]:
    """The cells to run: those without stored rows (`done`: the stored cells' statuses), plus
    (retry_failed) those not all ok. Returns (to run, skipped, skipped although not ok)."""
    todo = [c for c in cells if c.cell_id not in done or (retry_failed and done[c.cell_id] != OK)]
    run_ids = {c.cell_id for c in todo}
    skipped_bad = sum(1 for c in cells if c.cell_id not in run_ids and done.get(c.cell_id, OK) != OK)
    return todo, len(cells) - len(todo), skipped_bad


def run_sweep(
    suite_name: str,
    cells: list[Cell],
    results_dir: Path,
    executor: str = "serial",
    workers: int | None = None,
    address: str | None = None,
    retry_failed: bool = False,
    console: Any = None,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> SweepSummary:
    """Run the `cells` not yet in `results_dir`, writing each cell's rows as soon as it finishes,
    then rebuild results.parquet. Interrupting (Ctrl-C, or SIGTERM in the main thread) keeps every
    finished cell. Each cell is claimed before it runs (harness.sweep.locks), so sweeps sharing
    the folder never compute a cell twice; `shard=(i, n)` runs only the i-th of n shares of the
    suite (a producer with its consumers), for splitting one sweep over machines.

    Raises ResultsError, before anything runs, when `results_dir` cannot be used: its
    results.parquet was not written by this harness, or it cannot be written and there are cells
    to run. A write that fails later (a full disk) stops the sweep with `summary.error` set."""
    from rich.console import Console

    console = console or Console(stderr=True)
    results_dir = Path(results_dir)
    summary, todo, statuses = _plan(suite_name, cells, results_dir, retry_failed, shard, console)
    bar = Progress(console, suite_name, todo, enabled=progress, workers=_parallel(executor, workers))
    run = _Run(results_dir, cells, summary, statuses, bar)
    with _signals_as_interrupt(summary), run.claims:
        try:
            if todo:
                with make_executor(executor, run.ctx, workers, address) as ex, bar:
                    for wave in in_waves(with_checkpoint_dirs(cells, todo, results_dir)):
                        run.wave(ex, wave)
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.signal = summary.signal or signal.SIGINT
        except _WriteFailed as exc:
            summary.error = str(exc)
        finally:
            summary.table = _consolidate(results_dir, summary)
    for note in run.claims.notes:  # claim files that held nothing (hand-made, damaged): taken over
        console.print(f"[yellow]claims[/]: {note}", highlight=False)
    summary.not_ok = _not_ok_cells(cells, summary.table)
    return summary


def _plan(suite_name: str, cells: list[Cell], results_dir: Path, retry_failed: bool,
          shard: tuple[int, int] | None, console: Any) -> tuple[SweepSummary, list[Cell], dict[str, str]]:
    """Check and repair the results folder, then pick the cells to run: (the summary so far, the
    cells to run, the stored cells' statuses). Says what it repaired, skips and reruns."""
    # an unreadable results.parquet beside intact cells is rebuilt from them (kept aside); a
    # foreign one is never overwritten
    repaired = set_aside_damaged_table(results_dir) if results_dir.is_dir() else []
    check_writable_results(results_dir)
    repaired += _repair(results_dir) if results_dir.is_dir() else []
    for line in repaired:
        console.print(f"[yellow]repaired[/]: {line}", highlight=False)
    clean_stale_tmp(results_dir)
    # one read of what is stored: the cells to run and the claims' "stored since we looked" agree
    statuses = cell_statuses(results_dir)
    todo, skipped, skipped_bad = select_cells(cells, statuses, retry_failed)
    if shard is not None:
        todo = in_shard(todo, cells, *shard)
    summary = SweepSummary(suite_name, results_dir, len(cells), skipped, repaired=repaired)
    if skipped:
        console.print(f"{skipped} of {len(cells)} cells already in {results_dir}; skipping them"
                      + (f" ({skipped_bad} not ok: --retry-failed re-runs them)" if skipped_bad else ""))
    todo, reruns = with_missing_producers(cells, todo, results_dir, statuses)
    summary.n_skipped -= len(reruns)
    if reruns:
        console.print(f"{len(reruns)} finished cell(s) run again: a cell to run consumes their checkpoint, "
                      f"which is not in {checkpoints_dir(results_dir)}")
    if todo:
        check_can_write(results_dir)  # before any cell computes for nothing
    return summary, todo, statuses


class _Run:
    """One sweep's running state: claims, what each finished cell stored, and the progress bar."""

    def __init__(self, results_dir: Path, cells: list[Cell], summary: SweepSummary, statuses: dict[str, str],
                 bar: Progress):
        self.results_dir, self.summary, self.statuses, self.bar = results_dir, summary, statuses, bar
        self.stored_at_start = set(statuses)
        self.by_id = {c.cell_id: c for c in cells}
        self.errors: dict[str, str] = {}
        self.claims = Claims(results_dir)
        self.ctx = make_context()

    def wave(self, ex: Any, wave: list[Cell]) -> None:
        """Run one wave of cells whose producers have run: blocked ones get their rows at once."""
        ready = []
        for cell in wave:
            if any(d.cell_id in self.summary.elsewhere for d in cell.dependencies()):
                self.elsewhere(cell)  # its producer runs in another sweep: so does it
                continue
            why = blocked_reason(cell, self.statuses, self.errors, self.by_id, self.results_dir)
            if why:
                self.record(cell, dependency_rows(cell, self.ctx, why))
                continue
            deps = cell.dependencies()
            ready.append(cell.with_inputs({d.param: str(checkpoint_path(self.results_dir, d.cell_id))
                                           for d in deps}) if deps else cell)
        for cell, rows in ex.run(ready, self.admit) if ready else ():
            if rows is None:
                self.elsewhere(cell)
            else:
                self.record(cell, rows)

    def admit(self, cell: Cell) -> bool:
        """Claim the cell; refuse it when another sweep holds it or has stored it meanwhile."""
        if not self.claims.claim(cell.cell_id):
            return False
        if cell.cell_id not in self.stored_at_start and cell_path(self.results_dir, cell.cell_id).exists():
            self.claims.release(cell.cell_id)  # finished by another sweep since we looked
            return False
        return True

    def elsewhere(self, cell: Cell) -> None:
        self.summary.elsewhere.append(cell.cell_id)
        self.bar.advance(ELSEWHERE, cell)

    def record(self, cell: Cell, rows: list[dict[str, Any]]) -> None:
        try:
            write_cell(self.results_dir, cell.cell_id, rows)
        except OSError as exc:
            raise _WriteFailed(f"cannot write the rows of cell {cell.cell_id} ({cell.label()}) in "
                               f"{self.results_dir}: {os_error_text(exc)}. The sweep stopped; the cells written "
                               f"before are saved: fix that, then rerun the same command to resume") from None
        status = _cell_status(rows)
        self.statuses[cell.cell_id] = status
        if status != OK:
            self.errors[cell.cell_id] = next((str(r["error"]) for r in rows if r.get("error")), "")
        self.summary.ran[status] += 1
        self.claims.release(cell.cell_id)
        self.bar.advance(status, cell, _cell_seconds(rows))


def in_shard(todo: list[Cell], cells: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of `todo` in shard `index` of `count`: a cell goes with the root producer of
    its inputs (so a consumer runs where its producer's checkpoint is), else with itself."""
    by_id = {c.cell_id: c for c in cells}

    def root(cell: Cell) -> str:
        seen = set()
        while cell.dependencies() and cell.cell_id not in seen:
            seen.add(cell.cell_id)
            producer = by_id.get(cell.dependencies()[0].cell_id)
            if producer is None:
                break
            cell = producer
        return cell.cell_id

    return [c for c in todo if shard_of(root(c), count) == index]


def _parallel(executor: str, workers: int | None) -> int:
    """How many cells run at once (for the ETA)."""
    if executor == "serial":
        return 1
    from harness.sweep.executors import usable_cores

    return workers or usable_cores()


def _cell_seconds(rows: list[dict[str, Any]]) -> float | None:
    """The wall time a finished cell took (its rows' wall_s), None when unknown (a crash row)."""
    times = [r.get("wall_s") for r in rows if isinstance(r.get("wall_s"), (int, float))]
    return max(times) if times else None


class _WriteFailed(Exception):
    """A cell's rows could not be written: the sweep stops (its message says why)."""


def _repair(results_dir: Path) -> list[str]:
    try:
        return repair(results_dir)
    except OSError as exc:  # a read-only directory: reading still works (store.read_cells)
        return [f"{results_dir} has a damaged cell file that cannot be repaired here ({os_error_text(exc)}); "
                f"its rows are read from {RESULTS_FILE} where it holds them"]


def _consolidate(results_dir: Path, summary: SweepSummary) -> pd.DataFrame:
    """Rebuild results.parquet; if that cannot be written, the table from the cell files (which
    hold every result) and a message in `summary.error`."""
    try:
        return consolidate(results_dir)
    except (OSError, ResultsError) as exc:
        why = os_error_text(exc) if isinstance(exc, OSError) else str(exc)
        summary.error = summary.error or (
            f"cannot rebuild {results_dir / RESULTS_FILE}: {why}. Every finished cell is saved in "
            f"{results_dir / 'cells'} (load_results and harness report read them); rerun to rebuild the table")
        return read_cells(results_dir, warn=False)


@contextlib.contextmanager
def _signals_as_interrupt(summary: SweepSummary) -> Iterator[None]:
    """While the sweep runs, SIGTERM (a scheduler's `timeout`, `kill`) interrupts it like Ctrl-C:
    finished cells are kept and the table is rebuilt. A signal during that clean-up is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        if summary.interrupted:
            return
        summary.interrupted, summary.signal = True, signum
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)



def _not_ok_cells(cells: list[Cell], table: pd.DataFrame) -> list[tuple[Cell, str, str]]:
    by_id = {c.cell_id: c for c in cells}
    bad = table[table["cell_id"].isin(list(by_id)) & (table["status"] != OK)]
    out = []
    for cid, grp in bad.groupby("cell_id", sort=False):
        first = grp.iloc[0]
        err = "" if pd.isna(first["error"]) else str(first["error"])
        out.append((by_id[str(cid)], str(first["status"]), err))
    return out
