"""What a sweep shows while it runs and when it ends: a progress bar, and its outcome (`SweepSummary`)
with the summary table."""
from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.sweep.cell import Cell
from harness.sweep.results import OK, STATUSES
from harness.sweep.store import RESULTS_FILE

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class SweepSummary:
    suite: str
    results_dir: Path
    n_cells: int  # cells of the suite
    n_skipped: int  # already in the store, not run
    ran: Counter = field(default_factory=Counter)  # status -> cells run now
    #: every cell of the suite whose stored rows are not all ok: (cell, status, first error)
    not_ok: list[tuple[Cell, str, str]] = field(default_factory=list)
    table: pd.DataFrame | None = None
    interrupted: bool = False
    #: the signal that interrupted the sweep (SIGINT for Ctrl-C, SIGTERM), when interrupted
    signal: int | None = None
    #: why the sweep stopped before its end although no cell failed (results could not be written)
    error: str | None = None
    #: what the sweep repaired in the results directory before it started (harness.sweep.repair)
    repaired: list[str] = field(default_factory=list)
    #: cells left to another sweep into the same folder (claimed by it, or stored meanwhile)
    elsewhere: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.not_ok and not self.interrupted and not self.error

    @property
    def exit_code(self) -> int:
        """The command line's exit status: 128 + signal when interrupted (130 Ctrl-C, 143
        SIGTERM), 2 when results could not be written, 1 with a cell not ok, else 0."""
        if self.interrupted:
            return 128 + (self.signal or signal.SIGINT)
        if self.error:
            return 2
        return 1 if self.not_ok else 0


#: the progress status of a cell another sweep into the same folder runs (harness.sweep.locks)
ELSEWHERE = "elsewhere"


class CostModel:
    """The ETA of the cells still to run: each task's `expected_seconds` prior, rescaled by what
    that task's finished cells actually took (so cheap analytic cells done first no longer make
    the rest look quick), divided among the parallel workers."""

    def __init__(self, cells: list[Cell], workers: int = 1):
        from harness.registry import TASKS

        self.workers = max(1, workers)
        self.expected: dict[str, float] = {}
        for c in cells:
            try:
                self.expected[c.cell_id] = max(1e-3, float(TASKS.get(c.task)().expected_seconds(c)))
            except Exception:  # a task whose estimate fails must not stop the sweep
                self.expected[c.cell_id] = 1.0
        self.task_of = {c.cell_id: c.task for c in cells}
        self.spent: dict[str, list[float]] = {}  # task -> [actual seconds, expected seconds]

    def observe(self, cell: Cell, seconds: float | None) -> None:
        if seconds is None or not seconds >= 0:
            return
        s = self.spent.setdefault(cell.task, [0.0, 0.0])
        s[0] += seconds
        s[1] += self.expected.get(cell.cell_id, 1.0)

    def _rate(self, task: str) -> float:
        s = self.spent.get(task)
        if s and s[1] > 0:
            return s[0] / s[1]
        total = [sum(v[i] for v in self.spent.values()) for i in (0, 1)]
        return total[0] / total[1] if total[1] > 0 else 1.0

    def eta(self, remaining: list[str]) -> float | None:
        """Seconds left for the cells `remaining` (None before any cell finished)."""
        if not self.spent:
            return None
        work = sum(self.expected.get(cid, 1.0) * self._rate(self.task_of.get(cid, "")) for cid in remaining)
        return work / min(self.workers, max(1, len(remaining)))


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """The sweep's progress: cells done / failed / left, elapsed and a calibrated ETA (CostModel).
    On a terminal a live bar; otherwise (CI, nohup, a SLURM log) one plain line per finished
    cell, so a log shows progress as it happens."""

    def __init__(self, console: Any, name: str, cells: list[Cell], enabled: bool = True, workers: int = 1):
        from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.console = console
        self.enabled = enabled and bool(cells)
        self.live = self.enabled and bool(getattr(console, "is_terminal", False))
        self.total = len(cells)
        self.left = [c.cell_id for c in cells]
        self.ok = self.failed = self.elsewhere = 0
        self.costs = CostModel(cells, workers)
        self.started = time.monotonic()
        self.bar = Bar(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
            console=console, disable=not self.live,
        )
        self.task_id = self.bar.add_task(name, total=self.total, stats=self._stats(), eta=_clock(None))

    def _stats(self) -> str:
        other = f" {self.elsewhere} elsewhere" if self.elsewhere else ""
        return f"[green]{self.ok} ok[/] [red]{self.failed} failed[/]{other} {len(self.left)} left"

    def advance(self, status: str, cell: Cell, seconds: float | None = None) -> None:
        if status == OK:
            self.ok += 1
        elif status == ELSEWHERE:
            self.elsewhere += 1
        else:
            self.failed += 1
        if cell.cell_id in self.left:
            self.left.remove(cell.cell_id)
        self.costs.observe(cell, seconds)
        eta = _clock(self.costs.eta(self.left)) if self.left else _clock(0)
        if self.live:
            if status not in (OK, ELSEWHERE):
                self.bar.console.print(f"[red]{status}[/]: {cell.label()} ({cell.cell_id})")
            self.bar.update(self.task_id, advance=1, stats=self._stats(), eta=eta)
        elif self.enabled:
            done = self.ok + self.failed + self.elsewhere
            took = f" ({seconds:.1f} s)" if seconds is not None else ""
            other = f", {self.elsewhere} elsewhere" if self.elsewhere else ""
            self.console.print(
                f"[{done}/{self.total}] {status} {cell.label()}{took} | {self.ok} ok, {self.failed} failed{other}, "
                f"{len(self.left)} left | elapsed {_clock(time.monotonic() - self.started)} | ETA {eta}",
                markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()


def print_summary(summary: SweepSummary, console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"sweep {summary.suite}", show_header=False)
    t.add_row("cells in suite", str(summary.n_cells))
    t.add_row("already done (skipped)", str(summary.n_skipped))
    t.add_row("run now", str(sum(summary.ran.values())))
    for status in STATUSES:
        if summary.ran.get(status):
            t.add_row(f"  {status}", str(summary.ran[status]))
    if summary.elsewhere:
        t.add_row("left to another sweep", str(len(summary.elsewhere)))
    t.add_row("not ok in the table", str(len(summary.not_ok)))
    t.add_row("results", str(summary.results_dir / RESULTS_FILE))
    console.print(t)
    if summary.elsewhere:
        console.print(f"{len(summary.elsewhere)} cell(s) were claimed by another sweep into {summary.results_dir} "
                      f"(or stored by it meanwhile): they are in the table once that sweep stores them; rerun "
                      f"this command then to include any it did not finish", highlight=False)
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
