"""What a sweep shows while it runs and when it ends: a progress bar and the summary table."""
from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from harness.sweep.cell import Cell
from harness.sweep.results import OK, STATUSES
from harness.sweep.store import RESULTS_FILE

if TYPE_CHECKING:
    from harness.sweep.driver import SweepSummary


class Progress:
    """A rich progress bar: cells done / failed / remaining, elapsed and ETA."""

    def __init__(self, console: Any, name: str, total: int, enabled: bool = True):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.enabled = enabled
        self.total = total
        self.ok = self.failed = 0
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, disable=not enabled,
        )
        self.task_id = self.progress.add_task(name, total=total, stats=self._stats())

    def _stats(self) -> str:
        left = self.total - self.ok - self.failed
        return f"[green]{self.ok} ok[/] [red]{self.failed} failed[/] {left} left"

    def advance(self, status: str, cell: Cell) -> None:
        if status == OK:
            self.ok += 1
        else:
            self.failed += 1
            if self.enabled:
                self.progress.console.print(f"[red]{status}[/]: {cell.label()} ({cell.cell_id})")
        self.progress.update(self.task_id, advance=1, stats=self._stats())

    def __enter__(self) -> "Progress":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()


def print_summary(summary: "SweepSummary", console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"sweep {summary.suite}", show_header=False)
    t.add_row("cells in suite", str(summary.n_cells))
    t.add_row("already done (skipped)", str(summary.n_skipped))
    t.add_row("run now", str(sum(summary.ran.values())))
    for status in STATUSES:
        if summary.ran.get(status):
            t.add_row(f"  {status}", str(summary.ran[status]))
    t.add_row("not ok in the table", str(len(summary.not_ok)))
    t.add_row("results", str(summary.results_dir / RESULTS_FILE))
    console.print(t)
    if summary.not_ok:
        ft = Table(title=f"{len(summary.not_ok)} cell(s) not ok")
        for col in ("cell_id", "cell", "status", "error"):
            ft.add_column(col, overflow="fold")
        for cell, status, err in summary.not_ok[:20]:
            ft.add_row(cell.cell_id, cell.label(), status, err.splitlines()[0][:200] if err else "")
        console.print(ft)
        if len(summary.not_ok) > 20:
            console.print(f"... and {len(summary.not_ok) - 20} more (see the status/error columns)")
        console.print("[red]some cells failed[/]: their rows are in the table with status and error; "
                      "rerun with --retry-failed to run them again")
    if summary.interrupted:
        name = signal.Signals(summary.signal).name if summary.signal else "SIGINT"
        console.print(f"[yellow]interrupted[/] ({name}): finished cells are saved; rerun the same command to resume",
                      highlight=False)
    if summary.error:
        console.print(f"[red]error[/]: {summary.error}", highlight=False)
