"""Running one cell in the current process (many cells: `executors`): `execute_cell` returns its complete table rows and
never raises for the cell's own failure. An exception becomes a row with status "failed" (or
"oom" for out-of-memory errors) and the error message, and a NaN or infinite value becomes
status "diverged". Every row carries the cell's identity columns and the run's provenance."""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness import __version__
from harness.registry import TASKS
from harness.runtime.devices import exception_status, free_device_memory
from harness.runtime.isolate import add_import_paths
from harness.sweep.cell import Cell
from harness.sweep.results import OK, REQUIRED_TASK_ROW_KEYS, STATUSES, TASK_ROW_KEYS, rows_to_frame
from harness.tasks.base import catalogued_unit

_MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class RunContext:
    """What every cell of a sweep shares; computed once in the driver and sent along."""

    harness_version: str
    git_sha: str
    #: paths the driver could import task modules from (its working directory)
    sys_path: tuple[str, ...] = ()
    #: torch intra-op threads for the process running the cell; None leaves torch's default
    torch_threads: int | None = None


def make_context(torch_threads: int | None = None) -> RunContext:
    return RunContext(__version__, git_sha(), (os.getcwd(),), torch_threads)


@lru_cache(maxsize=1)
def git_sha() -> str:
    """Commit of the harness checkout the code runs from ("-dirty" with uncommitted changes to
    tracked files), or "unknown" (installed from a wheel, no git, no commit yet). Never fails."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != root:  # not our checkout (e.g. site-packages inside a repo)
        return "unknown"
    sha = git("rev-parse", "HEAD")
    if not sha:
        return "unknown"
    # --no-optional-locks: a plain `git status` may take .git/index.lock to refresh the index,
    # which would collide with the user's own git commands in that checkout
    dirty = git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    return sha + ("-dirty" if dirty else "")


def describe_exception(exc: BaseException) -> str:
    """`Type: message [at file:line in func]`, the innermost frame telling where it broke."""
    msg = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        f = frames[-1]
        msg += f" [at {_short_path(f.filename)}:{f.lineno} in {f.name}]"
    return msg if len(msg) <= _MAX_ERROR_CHARS else msg[: _MAX_ERROR_CHARS - 3] + "..."


def _short_path(filename: str) -> str:
    parts = Path(filename).parts
    for anchor in ("harness", "variants", "tests", "site-packages"):
        if anchor in parts:
            return str(Path(*parts[parts.index(anchor):]))
    return filename


def _prepare_process(ctx: RunContext, task_modules: tuple[str, ...]) -> None:
    import importlib

    add_import_paths(ctx.sys_path)
    for name in task_modules:
        importlib.import_module(name)


def _seed_and_threads(seed: int, threads: int | None) -> None:
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _torch_version() -> str:
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:
        return "none"


def _check_task_rows(rows: Any) -> list[dict[str, Any]]:
    """Make a task's output rows valid table rows, or raise (the cell then fails, loudly)."""
    if not isinstance(rows, list) or not rows:
        raise TypeError(f"a task must return a non-empty list of row dicts, got {type(rows).__name__}: {rows!r:.200}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"row {i} is a {type(row).__name__}, not a dict")
        unknown = sorted(set(row) - TASK_ROW_KEYS)
        if unknown:
            raise ValueError(f"row {i} has keys outside the results schema: {unknown}; "
                             f"allowed: {sorted(TASK_ROW_KEYS)}")
        missing = [k for k in REQUIRED_TASK_ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"row {i} lacks {missing}")
        row = dict(row)
        row["unit"] = catalogued_unit(str(row["metric"]), row.get("unit"))
        status = row.get("status") or OK
        if status not in STATUSES:
            raise ValueError(f"row {i} has status {status!r}; allowed: {list(STATUSES)}")
        value = row["value"]
        if value is not None:
            value = float(value)
            if status == OK and not math.isfinite(value):
                status = "diverged"
                row.setdefault("error", f"non-finite value {value} for metric {row['metric']!r}")
        row["value"], row["status"] = value, status
        out.append(row)
    return out


def execute_cell(cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
    """Run one cell here and return its complete table rows. Never raises for the cell's own
    failures (KeyboardInterrupt and SystemExit still stop the sweep)."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    base = {
        **cell.identity_columns(),
        "harness_version": ctx.harness_version,
        "git_sha": ctx.git_sha,
        "started_at": started.isoformat(),
    }
    try:
        _prepare_process(ctx, cell.task_modules)
        task = TASKS.get(cell.task)()
        _seed_and_threads(cell.seed, ctx.torch_threads)
        rows = [{**base, **row} for row in _check_task_rows(task.run(cell.for_task()))]
        rows_to_frame(rows)  # fails here, as this cell's error, if a value cannot fit its column
    except Exception as exc:
        rows = [{**base, "metric": None, "value": None, "unit": None, "status": exception_status(exc),
                 "error": describe_exception(exc)}]
        free_device_memory()  # the next cell in this process must not inherit cached blocks
    extra = {"torch_version": _torch_version(), "wall_s": time.perf_counter() - t0}
    return [{**row, **extra} for row in rows]


def crash_rows(cell: Cell, ctx: RunContext, error: str, status: str = "failed") -> list[dict[str, Any]]:
    """Rows for a cell whose worker died before it could report (killed, crashed, lost)."""
    return [{**cell.identity_columns(), "torch_version": _torch_version(), "harness_version": ctx.harness_version,
             "git_sha": ctx.git_sha, "started_at": datetime.now(timezone.utc).isoformat(), "wall_s": None,
             "metric": None, "value": None, "unit": None, "status": status, "error": error}]


def dependency_rows(cell: Cell, ctx: RunContext, error: str) -> list[dict[str, Any]]:
    """The failed row of a cell not run because a cell it consumes is not ok."""
    return crash_rows(cell, ctx, error)
