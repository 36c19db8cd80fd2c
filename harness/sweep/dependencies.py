"""Cells that consume other cells' checkpoints (a parameter `{from: <task>}` in the suite; see
`Cell.dependencies`). The sweep runs in waves, producers before consumers, with any executor: a
producer consumed by some cell saves its model under `<results_dir>/checkpoints/<producer
cell_id>/`, each consumer gets that path (`Cell.inputs`), and a consumer whose producer is not
ok gets a failed row naming it instead of running."""
from __future__ import annotations

from pathlib import Path

from harness.sweep.cell import Cell
from harness.sweep.results import OK


def checkpoints_dir(results_dir: Path) -> Path:
    return Path(results_dir).resolve() / "checkpoints"


def checkpoint_path(results_dir: Path, cell_id: str) -> Path:
    """Where the sweep keeps the checkpoint of a producing cell that other cells consume."""
    return checkpoints_dir(results_dir) / cell_id


def _has_checkpoint(results_dir: Path, cell_id: str) -> bool:
    from harness.model.checkpoint import is_complete_checkpoint

    return is_complete_checkpoint(checkpoint_path(results_dir, cell_id))


def with_missing_producers(cells: list[Cell], todo: list[Cell], results_dir: Path,
                           done: dict[str, str]) -> tuple[list[Cell], list[Cell]]:
    """`todo` plus the finished (ok, in `done`: the stored cells' statuses) producers whose
    checkpoint a cell to run needs but which is gone (or was never saved: the producer ran before
    anything consumed it), and so on up."""
    by_id = {c.cell_id: c for c in cells}
    ids = {c.cell_id for c in todo}
    reruns: list[Cell] = []
    frontier = list(todo)
    while frontier:
        nxt = []
        for cell in frontier:
            for d in cell.dependencies():
                p = by_id.get(d.cell_id)
                if (p is None or d.cell_id in ids or done.get(d.cell_id) != OK
                        or _has_checkpoint(results_dir, d.cell_id)):
                    continue
                ids.add(d.cell_id)
                reruns.append(p)
                nxt.append(p)
        frontier = nxt
    rerun_ids = {c.cell_id for c in reruns}
    # in the suite's order, so that the table and the progress read as usual
    return [c for c in cells if c.cell_id in ids or c.cell_id in rerun_ids], reruns


def with_checkpoint_dirs(cells: list[Cell], todo: list[Cell], results_dir: Path) -> list[Cell]:
    """Each cell to run that some cell of the suite consumes, told where to save its model."""
    consumed = {d.cell_id for c in cells for d in c.dependencies()}
    return [c.with_inputs(c.inputs, str(checkpoint_path(results_dir, c.cell_id))) if c.cell_id in consumed else c
            for c in todo]


def in_waves(todo: list[Cell]) -> list[list[Cell]]:
    """`todo` in waves: the cells that consume nothing still to run first, then the cells
    consuming only those, and so on (each wave in the given order)."""
    ids = {c.cell_id for c in todo}
    level: dict[str, int] = {}
    by_id = {c.cell_id: c for c in todo}

    def depth(cid: str, seen: frozenset = frozenset()) -> int:
        if cid not in level:
            deps = [d.cell_id for d in by_id[cid].dependencies() if d.cell_id in ids and d.cell_id not in seen]
            level[cid] = 1 + max((depth(p, seen | {cid}) for p in deps), default=-1)
        return level[cid]

    waves: dict[int, list[Cell]] = {}
    for c in todo:
        waves.setdefault(depth(c.cell_id), []).append(c)
    return [waves[k] for k in sorted(waves)]


def blocked_reason(cell: Cell, statuses: dict[str, str], errors: dict[str, str], by_id: dict[str, Cell],
             results_dir: Path) -> str | None:
    """Why `cell` cannot run (a cell it consumes is not ok, or left no checkpoint), or None."""
    for d in cell.dependencies():
        producer = by_id.get(d.cell_id)
        what = f"{producer.label()} (cell {d.cell_id})" if producer else f"{d.task} cell {d.cell_id}"
        status = statuses.get(d.cell_id)
        if status is None:
            reason = f"has not run: it is neither in this sweep nor in {results_dir}"
        elif status != OK:
            err = errors.get(d.cell_id)
            reason = (f"is {status}: {err.splitlines()[0][:300]}" if err else
                      f"is stored as {status} by an earlier run; --retry-failed re-runs it, then this cell")
        elif not _has_checkpoint(results_dir, d.cell_id):
            reason = f"finished without saving a checkpoint at {checkpoint_path(results_dir, d.cell_id)}"
        else:
            continue
        return f"not run: its input {d.param!r} is the checkpoint of {what}, which {reason}"
    return None
