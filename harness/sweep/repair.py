"""Repairing a results folder before a sweep writes into it: a damaged results.parquet or cell
file is set aside (``*.corrupt``) and restored from the other copy, stray temporary files of dead
writers are removed, and a folder that cannot be written is refused before any cell runs. The
store's contract (harness.sweep.store) holds throughout: nothing finished is ever lost."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd

from harness.sweep.store import (
    _CORRUPT_SUFFIX,
    _TMP_SUFFIX,
    CELLS_DIR,
    RESULTS_FILE,
    ResultsError,
    _atomic_write_parquet,
    _backup_rows,
    _cell_files,
    _consolidated,
    _read_cell_file,
    cell_path,
    cells_dir,
    consolidation_lock,
    damaged_cells,
    os_error_text,
    pid_alive,
)


def set_aside_damaged_table(results_dir: Path) -> list[str]:
    """Move a ``results.parquet`` that cannot be read at all (not parquet: damaged on disk, a
    truncated copy) aside as ``results.parquet.corrupt`` when readable cell files are beside it:
    they are the source of truth, and the sweep rebuilds the table from them. Returns one line
    per change. A readable table, a foreign one (other columns) or one without cells beside it is
    left for `check_writable_results` to judge. Raises ResultsError when it cannot be moved."""
    path = Path(results_dir) / RESULTS_FILE

    def damaged() -> str | None:
        why = _unreadable_table(path)
        intact = why is not None and any(_read_cell_file(p, columns=["status"]) is not None
                                         for p in _cell_files(results_dir))
        return why if intact else None

    if damaged() is None:  # the usual case: no lock taken, no lock file made
        return []
    with consolidation_lock(results_dir):  # not while another sweep rebuilds it
        why = damaged()
        if why is None:  # rebuilt meanwhile
            return []
        bad = _free_name(path.with_name(path.name + _CORRUPT_SUFFIX))
        try:
            os.replace(path, bad)
        except OSError as exc:
            raise ResultsError(f"{path} cannot be read ({why}) and cannot be moved aside here "
                               f"({os_error_text(exc)}); the cell files beside it are intact: move it away "
                               f"yourself and rerun (the table is rebuilt from {CELLS_DIR}/)") from None
    return [f"{path} could not be read ({why}): moved it aside as {bad.name}; the table is rebuilt from the "
            f"cell files in {CELLS_DIR}/ (the source of truth)"]


def _unreadable_table(path: Path) -> str | None:
    """Why the file at `path` cannot be read as parquet although its bytes can be read; None when
    it is fine, absent, not a file, or cannot be opened at all (permissions: not damage)."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError:
        return None
    try:
        pd.read_parquet(path, columns=[])
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
    return None


def repair(results_dir: Path) -> list[str]:
    """Make every cell of `results_dir` readable again, losing nothing; the sweep calls it before
    choosing the cells to run. Returns one line per change, for the user.

    - A cell file that cannot be read is moved aside (``<id>.parquet.corrupt``, kept for
      inspection) and, when ``results.parquet`` holds its rows, rewritten from them; only a
      cell without that copy runs again.
    - A directory with a harness ``results.parquet`` but no cell files (the cells were deleted,
      or only the table was copied) gets its cell files back from the table, so the sweep keeps
      those rows instead of overwriting the table with the new cells alone.
    """
    results_dir = Path(results_dir)
    notes: list[str] = []
    damaged = damaged_cells(results_dir)
    backup = _backup_rows(results_dir, {p.stem for p in damaged})
    for path in damaged:
        bad = _free_name(path.with_name(path.name + _CORRUPT_SUFFIX))
        os.replace(path, bad)
        if path.stem in backup:
            _atomic_write_parquet(backup[path.stem], path)
            notes.append(f"cell file {path} could not be read: restored its {len(backup[path.stem])} row(s) from "
                         f"{RESULTS_FILE} (the damaged file is kept as {bad.name})")
        else:
            notes.append(f"cell file {path} could not be read and {RESULTS_FILE} holds no copy of it: moved to "
                         f"{bad.name}; its cell runs again")
    if not _cell_files(results_dir):
        table = _consolidated(results_dir)
        if table is not None and not table.empty and table["cell_id"].notna().all():
            for cid, grp in table.groupby("cell_id", sort=False):
                _atomic_write_parquet(grp.reset_index(drop=True), cell_path(results_dir, str(cid)))
            notes.append(f"{results_dir / CELLS_DIR} had no cell files: restored {table['cell_id'].nunique()} "
                         f"cell(s) from {RESULTS_FILE}, which are not run again")
    return notes


def _free_name(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, ... : the first that does not exist (never overwrite)."""
    cand, i = path, 0
    while cand.exists():
        i += 1
        cand = path.with_name(f"{path.name}.{i}")
    return cand


def clean_stale_tmp(results_dir: Path) -> list[Path]:
    """Remove temp files left by writers that no longer run (a killed sweep). One that cannot be
    removed (a read-only directory) stays: readers ignore it."""
    removed = []
    for d in (Path(results_dir), cells_dir(results_dir)):
        if not d.is_dir():
            continue
        for p in d.glob(f".*{_TMP_SUFFIX}"):
            parts = p.name.rsplit(".", 3)  # .<name>.<pid>.<rand>.tmp
            try:
                pid = int(parts[-3])
            except (ValueError, IndexError):
                continue
            if pid != os.getpid() and not pid_alive(pid):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    continue
                removed.append(p)
    return removed


def check_can_write(results_dir: Path) -> None:
    """Raise ResultsError unless cell files can be written in `results_dir` (created if
    missing): found before a cell runs, not after it has computed for nothing."""
    results_dir = Path(results_dir)
    if results_dir.exists() and not results_dir.is_dir():
        raise ResultsError(f"--out {results_dir} is a file, not a directory; choose a directory "
                           f"(it is created if missing)")
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"cannot create the results directory {results_dir}: {os_error_text(exc)}; "
                           f"choose a writable --out") from None
    d = cells_dir(results_dir)
    if d.exists() and not d.is_dir():
        raise ResultsError(f"{d} is a file, not a directory; move it away or choose another --out")
    try:
        d.mkdir(exist_ok=True)
        probe = d / f".write-probe.{os.getpid()}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ResultsError(f"cannot write in the results directory {results_dir}: {os_error_text(exc)}; "
                           f"choose a writable --out") from None
