"""The sweep engine: a suite file → validated cells → executed (serially, in a process pool or on
Ray) → one crash-safe tidy results table. Free of torch: tasks import torch when they run.

Data flows one way:
- `reading` (YAML, finding a suite) → `schema` + `validate` (+ `references`, `messages`) → a `Suite`;
- `expand` → `cell`s, each identified by the hash of its resolved settings;
- `run_cell` runs one cell, `executors` many (serial, pool, Ray), `driver` the sweep (with `locks`:
  per-cell claims between sweeps, `dependencies`, `progress`);
- `store` keeps each cell's rows and the consolidated table, whose columns `results` defines.

The public names are importable from here: `from harness.sweep import load_suite, expand_cells`.
"""
from __future__ import annotations

from harness._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["load_suite", "find_suite", "suite_dirs"], "harness.sweep.reading"),
    "Suite": "harness.sweep.schema", "SuiteError": "harness.sweep.messages", "expand_cells": "harness.sweep.expand",
    "Cell": "harness.sweep.cell", "run_sweep": "harness.sweep.driver", "load_results": "harness.sweep.store",
}
__all__ = list(_EXPORTS)


__getattr__ = lazy_exports('harness.sweep', _EXPORTS)
