"""The results store: one directory per suite run, one tidy table.

Layout of a results directory (default ``results/<suite-name>/``)::

    cells/<cell_id>.parquet   the rows of one finished cell (the source of truth)
    results.parquet           all cells in one table (derived; rebuilt from cells/)
    .results.lock             held (flock) while a sweep rebuilds results.parquet

Crash safety comes from never writing a file in place: every file is written to a temporary
name in the same directory, flushed to disk, then renamed over its target with `os.replace`,
which is atomic. A process killed at any moment (even SIGKILL) leaves either the old file or
the new one, never half of one; at worst it leaves a stray ``.*.tmp`` file, which readers
ignore. So a killed sweep loses only the cells that were running, and `load_results` always
sees every finished cell, even if ``results.parquet`` was not rebuilt before the kill.

Nothing is ever lost:

- Reading (`load_results`, the report, ``--dry-run``) never moves, rewrites or deletes a file.
- A cell file that cannot be read (damaged on disk, or not written by the harness) is read from
  ``results.parquet``'s copy of its rows, which it still holds; a sweep (the only writer) moves
  the damaged file aside as ``*.corrupt`` and restores the cell from that copy (harness.sweep.repair), and
  re-runs the cell only when no copy exists.
- A ``results.parquet`` that this harness did not write (or cannot read) is never overwritten:
  `check_writable_results` refuses the directory with a `ResultsError`. One that cannot be read
  at all beside readable cell files is moved aside as ``results.parquet.corrupt`` and rebuilt
  from them (harness.sweep.repair): the cells are the source of truth.
- Sweeps sharing a directory rebuild ``results.parquet`` one at a time, each from the cell files
  on disk once it holds the lock (`consolidate`), so the last writer never writes an older table.
- ``results.parquet`` is rewritten only when its content changes, so a rerun with nothing to do
  writes nothing (and works on a read-only directory).

Load a table with::

    import harness
    df = harness.load_results("results/quickstart")   # or a path to a .parquet file
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from harness.sweep.results import OK, conform, empty_frame, rows_to_frame

CELLS_DIR = "cells"
RESULTS_FILE = "results.parquet"
_TMP_SUFFIX = ".tmp"
_CORRUPT_SUFFIX = ".corrupt"
#: held while results.parquet is rebuilt, so that sweeps sharing a directory take turns
_LOCK_FILE = ".results.lock"
#: columns every table this harness writes has (any version); a table without them is foreign
CORE_COLUMNS = ("cell_id", "metric", "value", "status")


class ResultsError(Exception):
    """A results directory or table the harness must not use as it is: foreign, unreadable or
    not writable. The message names the path and says what to do.

    Not a ValueError on purpose: callers that fall back to reading a hand-made table as it is
    (harness.report) on a ValueError must not do so for a table that is not results at all."""


def cells_dir(results_dir: Path) -> Path:
    return Path(results_dir) / CELLS_DIR


def cell_path(results_dir: Path, cell_id: str) -> Path:
    return cells_dir(results_dir) / f"{cell_id}.parquet"


def _atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # pid in the name: a reader can tell whose temp file it is (see harness.sweep.repair.clean_stale_tmp)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            df.to_parquet(f, index=False, engine="pyarrow")
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach disk before the data does
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_cell(results_dir: Path, cell_id: str, rows: list[dict[str, Any]]) -> Path:
    """Atomically write (or replace) one cell's rows."""
    df = rows_to_frame(rows)
    path = cell_path(results_dir, cell_id)
    _atomic_write_parquet(df, path)
    return path


def _cell_files(results_dir: Path) -> list[Path]:
    d = cells_dir(results_dir)
    if not d.is_dir():
        return []
    # sorted: the consolidated table must not depend on directory order
    return sorted(p for p in d.glob("*.parquet") if not p.name.startswith("."))


def _read_cell_file(path: Path, columns: list[str] | None = None) -> pd.DataFrame | None:
    """The cell file's rows, or None if it cannot be read (damaged, or not written by the
    harness). Reading never moves or deletes anything: see harness.sweep.repair for what a sweep does."""
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception:
        return None


def damaged_cells(results_dir: Path) -> list[Path]:
    """The cell files of `results_dir` that cannot be read."""
    return [p for p in _cell_files(results_dir) if _read_cell_file(p, columns=["status"]) is None]


def table_problem(columns: Iterable[str]) -> str | None:
    """Why a table with these columns is not a harness results table, or None if it is one."""
    cols = list(columns)
    missing = [c for c in CORE_COLUMNS if c not in cols]
    if not missing:
        return None
    shown = ", ".join(cols[:8]) + (f", ... ({len(cols)} in all)" if len(cols) > 8 else "")
    return f"it has no {', '.join(missing)} column{'s' if len(missing) > 1 else ''} (its columns: {shown or 'none'})"


def read_table_file(path: Path) -> pd.DataFrame:
    """A results table from a .parquet file, conformed to the schema. Raises ResultsError for a
    file that is not parquet or not a harness table, ValueError (from `conform`) for a harness
    table with columns outside the schema."""
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise ResultsError(f"{path} cannot be read as a parquet table ({type(exc).__name__}: {exc})") from None
    problem = table_problem(df.columns)
    if problem:
        raise ResultsError(f"{path} is not a results table written by this harness: {problem}")
    return conform(df)


def _consolidated(results_dir: Path) -> pd.DataFrame | None:
    """``results.parquet`` of `results_dir` if it is a readable harness table, else None."""
    path = Path(results_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return read_table_file(path)
    except (ResultsError, ValueError):
        return None


def _backup_rows(results_dir: Path, cell_ids: set[str]) -> dict[str, pd.DataFrame]:
    """cell_id -> that cell's rows in ``results.parquet`` (the copy a damaged cell file leaves)."""
    table = _consolidated(results_dir) if cell_ids else None
    if table is None:
        return {}
    rows = table[table["cell_id"].isin(list(cell_ids))]
    return {str(cid): grp.reset_index(drop=True) for cid, grp in rows.groupby("cell_id", sort=False)}


def _warn_damaged(path: Path, restored: bool) -> None:
    if restored:
        warnings.warn(f"cell file {path} cannot be read; using its rows from {RESULTS_FILE} "
                      f"(the next sweep into this directory restores the file from them)", stacklevel=4)
    else:
        warnings.warn(f"cell file {path} cannot be read and {RESULTS_FILE} holds no copy of its rows; "
                      f"the next sweep into this directory moves it aside and runs its cell again", stacklevel=4)


def _status_of(df: pd.DataFrame) -> str:
    bad = df.loc[df["status"].fillna("failed") != OK, "status"]
    return OK if bad.empty else str(bad.iloc[0] if pd.notna(bad.iloc[0]) else "failed")


def cell_statuses(results_dir: Path) -> dict[str, str]:
    """cell_id -> "ok" if every row of the cell is ok, else the first other status. A damaged
    cell file counts with its rows in ``results.parquet`` (and not at all without them)."""
    out: dict[str, str] = {}
    damaged: list[Path] = []
    for path in _cell_files(results_dir):
        df = _read_cell_file(path, columns=["cell_id", "status"])
        if df is None:
            damaged.append(path)
            continue
        out[path.stem] = _status_of(df)
    backup = _backup_rows(results_dir, {p.stem for p in damaged})
    for path in damaged:
        if path.stem in backup:
            out[path.stem] = _status_of(backup[path.stem])
    return out


def read_cells(results_dir: Path, warn: bool = True) -> pd.DataFrame:
    """All cells of `results_dir` as one table in a deterministic order: the cell files, and for
    a cell file that cannot be read, its rows in ``results.parquet`` (a warning says so)."""
    frames: list[pd.DataFrame] = []
    damaged: list[Path] = []
    for p in _cell_files(results_dir):
        df = _read_cell_file(p)
        if df is None:
            damaged.append(p)
        else:
            frames.append(conform(df))
    backup = _backup_rows(results_dir, {p.stem for p in damaged})
    for p in damaged:
        if warn:
            _warn_damaged(p, p.stem in backup)
        if p.stem in backup:
            frames.append(backup[p.stem])
    if not frames:
        return empty_frame()
    return sort_rows(conform(pd.concat(frames, ignore_index=True)))


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Order rows by what they measure, then by cell id; rows of one cell keep the task's order
    (stable sort), so the same results give the same table from any executor."""
    keys = ["suite", "task", "variant", "n_full_attn_layers", "layout", "placement", "window", "n_layers", "d_model",
            "seq_len", "batch", "seed", "cell_id"]
    return df.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)


def _same_table(a: pd.DataFrame, b: pd.DataFrame | None) -> bool:
    if b is None:
        return False
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    except AssertionError:
        return False
    return True


def _kind_of(path: Path) -> str:
    """'a directory', 'a symbolic link to nothing', ... : what is at `path` instead of a file."""
    if path.is_dir():
        return "a directory"
    if path.is_symlink() and not path.exists():
        return "a symbolic link to nothing"
    return "not a regular file"


def check_writable_results(results_dir: Path) -> None:
    """Raise ResultsError if a sweep must not write into `results_dir` because its
    ``results.parquet`` is not one this harness wrote (or cannot be read): it would be
    overwritten. A directory without one, or with a harness table, is fine."""
    path = Path(results_dir) / RESULTS_FILE
    if not path.exists():
        return
    if not path.is_file():
        raise ResultsError(f"{path} is {_kind_of(path)}, not a file; move it away or choose another --out")
    try:
        read_table_file(path)
    except ResultsError as exc:
        raise ResultsError(f"{exc}. A sweep would overwrite it, so nothing was run: move it away "
                           f"or choose another --out") from None
    except ValueError as exc:
        raise ResultsError(f"{path} has columns this harness does not write ({exc}). A sweep would "
                           f"overwrite it, so nothing was run: move it away or choose another --out") from None


def consolidate(results_dir: Path) -> pd.DataFrame:
    """Rebuild ``results.parquet`` from the cell files (atomically) and return the table. The file
    is written only when its content changes (a rerun that ran nothing writes nothing), and never
    over a table this harness did not write (ResultsError).

    Sweeps sharing the directory consolidate one at a time (`consolidation_lock`), each reading
    the cell files once it holds the lock: otherwise a sweep that read the cells earlier could
    finish writing after one that read them later, leaving a table without the newest cells."""
    results_dir = Path(results_dir)
    with consolidation_lock(results_dir):
        df = read_cells(results_dir, warn=False)
        if _cell_files(results_dir):
            check_writable_results(results_dir)
            if not _same_table(df, _consolidated(results_dir)):
                _atomic_write_parquet(df, results_dir / RESULTS_FILE)
    return df


@contextlib.contextmanager
def consolidation_lock(results_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock (flock) on ``<results_dir>/.results.lock`` while inside. Where the
    lock file cannot be created or opened (a read-only directory) it goes on unlocked: such a
    directory cannot get a new ``results.parquet`` from anyone, so there is no race to prevent."""
    path = Path(results_dir) / _LOCK_FILE
    try:
        fd: int | None = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)  # read-only is enough for flock
    except OSError:
        fd = None
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Load a results table as a pandas DataFrame (one row per measurement).

    `path` is a results directory (``results/<suite>``; read from its cell files, so a sweep that
    was killed still loads completely) or a ``.parquet`` file. Loading never writes, moves or
    deletes anything. The columns are described in docs/suites.md and defined in harness.sweep.results.
    Raises FileNotFoundError when there are no results at `path`, ResultsError when the table
    there is not one this harness wrote.
    """
    path = Path(path)
    if path.is_dir():
        if _cell_files(path):
            return read_cells(path)
        table = path / RESULTS_FILE
        if table.is_file():
            return read_table_file(table)
        if table.exists():  # there, but not a table: "missing" would send the user looking elsewhere
            raise ResultsError(f"{table} is {_kind_of(table)}, not a results table (a single .parquet file); "
                               f"move it away, or give the path of the results")
        if path.suffix == ".parquet":
            raise ResultsError(f"{path} is a directory, not a results .parquet file, and holds no results "
                               f"({CELLS_DIR}/*.parquet); give a results directory or a .parquet file")
        raise FileNotFoundError(f"no results in {path}: neither {CELLS_DIR}/*.parquet nor {RESULTS_FILE}")
    if path.is_file():
        return read_table_file(path)
    raise FileNotFoundError(f"no results at {path}")


def os_error_text(exc: OSError) -> str:
    """An OSError in a few words, with what usually fixes it."""
    code = exc.errno
    what = exc.strerror or str(exc)
    if code in (errno.EACCES, errno.EPERM):
        return f"{what} (no write permission)"
    if code == errno.EROFS:
        return f"{what} (a read-only file system)"
    if code == errno.ENOSPC:
        return f"{what} (the disk is full)"
    if code == errno.ENAMETOOLONG:
        return f"{what} (a file name is too long)"
    if code == errno.EEXIST:
        return f"{what} (a file is in the way)"
    return what


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that pid exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

