"""Validating a suite: the schema, then what a schema cannot say (each task's own parameters,
axis clashes, references between tasks), every problem collected into one SuiteError."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.registry import TASKS
from harness.sweep.messages import SuiteError, describe_error, error_text, fmt_loc, hint
from harness.sweep.references import check_references, with_placeholders
from harness.sweep.schema import INT64_MAX, Suite, axes_order_of, base_params
from harness.sweep.search import check_search


def big_ints(value: Any, loc: tuple = ()) -> list[str]:
    """Where `value` (raw YAML) holds an integer that does not fit the table's 64-bit columns."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            return [f"{fmt_loc(loc)}: the integer {value} is out of range; integers must fit in 64 bits "
                    f"(at most {INT64_MAX})"]
        return []
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in big_ints(v, (*loc, k))]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in big_ints(v, (*loc, i))]
    return []


def import_task_modules(names: list[str], extra_paths: tuple[str, ...] = ()) -> None:
    """Import modules that register extra tasks. The working directory is searched too (as
    `python -m` does), so a suite can name e.g. `tests.helpers_tasks` when run from a checkout."""
    from harness.runtime.isolate import add_import_paths

    add_import_paths((*extra_paths, os.getcwd()))
    for name in names:
        importlib.import_module(name)


def validate(raw: Any, source: Path | None) -> Suite:
    where = str(source) if source else "<suite>"
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite must be a YAML mapping (name:, task:, axes:, ...), "
                         f"got {type(raw).__name__}")
    raw = dict(raw)
    if source is not None and "name" not in raw:
        raw["name"] = Path(source).stem
    errors: list[str] = []
    big = big_ints(raw)
    if big:  # before anything else: pydantic and the tasks would give less clear messages
        raise SuiteError(error_text(where, big))
    mods = raw.get("task_modules") or []
    if isinstance(mods, list):
        for i, mod in enumerate(mods):
            try:
                import_task_modules([mod])
            except Exception as exc:  # report, do not crash: it is a bad suite entry
                errors.append(f"task_modules[{i}]: cannot import {mod!r}: {type(exc).__name__}: {exc}")
    sizes = raw.get("sizes") if isinstance(raw.get("sizes"), dict) else {}
    try:
        suite = Suite.model_validate(raw, context={"sizes": sizes})
    except ValidationError as exc:
        errors += [describe_error(e, Suite) for e in exc.errors()]
        raise SuiteError(error_text(where, errors)) from None
    suite._source = Path(source) if source else None
    suite._axes_order = axes_order_of(raw.get("axes"))
    # the task entries as written: `task:` is a list of entries, or one entry (a name or a mapping)
    raw_task = raw.get("task")
    raw_tasks = raw_task if isinstance(raw_task, list) else [raw_task] if isinstance(raw_task, dict) else []
    for entry, raw_entry in zip(suite.task, raw_tasks):
        if isinstance(raw_entry, dict):
            entry._axes_order = axes_order_of(raw_entry.get("axes"))
    errors += check_semantics(suite)
    if errors:
        raise SuiteError(error_text(where, errors))
    return suite




def check_semantics(suite: Suite) -> list[str]:
    """What a schema cannot say: task params (each task's own Params), axis clashes."""
    errors: list[str] = []
    if len(suite.task) > 1 and suite.params:
        errors.append("params: with several tasks, give each its own params (task: [{name: ..., params: {...}}])")
    axes_set = suite.axes.model_dump(exclude_none=True)
    for i, size in enumerate(suite.axes.size or []):
        clash = sorted(set(size.model_dump(exclude_unset=True)) & (set(axes_set) - {"size", "params"}))
        if clash:
            errors.append(f"axes.size[{i}]: sets {', '.join(clash)}, which is also an axis; keep one")
    for i, entry in enumerate(suite.task):
        params_cls = TASKS.get(entry.name).Params
        base = with_placeholders(base_params(suite, entry))
        loc: tuple = ("params",) if len(suite.task) == 1 and suite.params else ("task", i, "params")
        try:
            params_cls.model_validate(base)
        except ValidationError as exc:
            errors += [describe_error(e, params_cls, loc) for e in exc.errors()]
    param_fields = {e.name: TASKS.get(e.name).Params for e in suite.task}
    for key, values in (suite.axes.params or {}).items():
        owners = [n for n, p in param_fields.items() if key in p.model_fields]
        if not owners:
            known = sorted({f for p in param_fields.values() for f in p.model_fields})
            errors.append(
                f"axes.params.{key}: no task of this suite has a parameter {key!r}.{hint(key, known)} "
                f"Parameters: {', '.join(known) or 'none'}"
            )
            continue
        for entry in suite.task:
            if entry.name not in owners:
                continue
            params_cls = param_fields[entry.name]
            for j, val in enumerate(values):
                try:
                    params_cls.model_validate(with_placeholders({**base_params(suite, entry), key: val}))
                except ValidationError as exc:
                    errors += [
                        describe_error({**e, "loc": e["loc"][1:]}, params_cls, ("axes", f"params.{key}", j))
                        for e in exc.errors()
                        if e["loc"][:1] == (key,)
                    ]
    errors += check_references(suite)
    errors += check_search(suite)
    return errors
