"""The results store: one directory per suite run, one tidy table.

Layout of a results directory (default ``results/<suite-name>/``)::

    cells/<cell_id>.parquet   the rows of one finished cell (the source of truth)
    results.parquet           all cells in one table (derived; rebuilt from cells/)

Crash safety comes from never writing a file in place: every file is written to a temporary
name in the same directory, flushed to disk, then renamed over its target with `os.replace`,
which is atomic. A process killed at any moment (even SIGKILL) leaves either the old file or
the new one, never half of one; at worst it leaves a stray ``.*.tmp`` file, which readers
ignore. So a killed sweep loses only the cells that were running, and `load_results` always
sees every finished cell, even if ``results.parquet`` was not rebuilt before the kill.

Load a table with::

    import harness
    df = harness.load_results("results/quickstart")   # or a path to a .parquet file
"""
from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable, Union

import pandas as pd

from harness.schema import OK, conform, empty_frame, rows_to_frame

CELLS_DIR = "cells"
RESULTS_FILE = "results.parquet"
_TMP_SUFFIX = ".tmp"


def cells_dir(results_dir: Path) -> Path:
    return Path(results_dir) / CELLS_DIR


def cell_path(results_dir: Path, cell_id: str) -> Path:
    return cells_dir(results_dir) / f"{cell_id}.parquet"


def _atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # pid in the name: a reader can tell whose temp file it is (see clean_stale_tmp)
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
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:  # cannot happen through write_cell; a foreign or damaged file
        bad = path.with_name(path.name + ".corrupt")
        warnings.warn(f"unreadable cell file {path} ({exc}); moved to {bad.name}, its cell will re-run")
        try:
            os.replace(path, bad)  # keep it for inspection, never delete
        except OSError:
            pass
        return None


def cell_statuses(results_dir: Path) -> dict[str, str]:
    """cell_id -> "ok" if every row of the cell is ok, else the first other status."""
    out: dict[str, str] = {}
    for path in _cell_files(results_dir):
        df = _read_cell_file(path, columns=["cell_id", "status"])
        if df is None:
            continue
        bad = df.loc[df["status"].fillna("failed") != OK, "status"]
        out[path.stem] = OK if bad.empty else str(bad.iloc[0] if pd.notna(bad.iloc[0]) else "failed")
    return out


def read_cells(results_dir: Path) -> pd.DataFrame:
    """All cell files of `results_dir` as one table in a deterministic order."""
    frames = [df for df in (_read_cell_file(p) for p in _cell_files(results_dir)) if df is not None]
    if not frames:
        return empty_frame()
    df = conform(pd.concat([conform(f) for f in frames], ignore_index=True))
    return sort_rows(df)


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Order rows by what they measure, then by cell id; rows of one cell keep the task's order
    (stable sort), so the same results give the same table from any executor."""
    keys = ["suite", "task", "variant", "n_full_attn_layers", "layout", "n_layers", "d_model", "seq_len",
            "batch", "seed", "cell_id"]
    return df.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)


def consolidate(results_dir: Path) -> pd.DataFrame:
    """Rebuild ``results.parquet`` from the cell files (atomically) and return the table."""
    results_dir = Path(results_dir)
    df = read_cells(results_dir)
    if _cell_files(results_dir):
        _atomic_write_parquet(df, results_dir / RESULTS_FILE)
    return df


def load_results(path: Union[str, os.PathLike]) -> pd.DataFrame:
    """Load a results table as a pandas DataFrame (one row per measurement).

    `path` is a results directory (``results/<suite>``; its cell files are consolidated first,
    so a sweep that was killed still loads completely) or a ``.parquet`` file. The columns are
    described in docs/suites.md and defined in harness.schema.
    """
    path = Path(path)
    if path.is_dir():
        if _cell_files(path):
            try:
                return consolidate(path)
            except OSError:  # read-only results: still readable
                return read_cells(path)
        if (path / RESULTS_FILE).is_file():
            return conform(pd.read_parquet(path / RESULTS_FILE))
        raise FileNotFoundError(f"no results in {path}: neither {CELLS_DIR}/*.parquet nor {RESULTS_FILE}")
    if path.is_file():
        return conform(pd.read_parquet(path))
    raise FileNotFoundError(f"no results at {path}")


def clean_stale_tmp(results_dir: Path) -> list[Path]:
    """Remove temp files left by writers that no longer run (a killed sweep)."""
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
            if pid != os.getpid() and not _alive(pid):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def iter_cell_ids(results_dir: Path) -> Iterable[str]:
    return (p.stem for p in _cell_files(results_dir))
