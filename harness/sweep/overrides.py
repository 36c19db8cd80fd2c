"""Command-line overrides of a suite: `--set KEY=VALUE` (repeatable), `--device`, `--dtype`.

An override edits the suite as read from YAML, before validation, so it is checked like the
suite itself and is part of every cell's identity (a cell run with `--set model.d_model=128` is
a different cell). VALUE is YAML (`--set axes.seq_len=[512,1024]`, `--set params.steps=100`,
`--set axes.layout=3:1` stays the string "3:1"). KEY is a dotted path into the suite:

- `model.<field>`, `axes.<key>`: the suite's, and the same key of every task entry that sets it
  (so the override holds for every cell);
- `params.<name>`: the suite's params with one task; with several, every task that has the
  parameter (an error if none has it);
- `task.<task name>.<...>`: one task entry (e.g. `task.mqar.params.steps=100`);
- any other top-level key (`name`, `skip_invalid`, ...).
`--device X` and `--dtype X` are `--set axes.device=X` and `--set axes.dtype=X`.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from harness.sweep.messages import SuiteError
from harness.sweep.yaml_dialect import parse_yaml_value

__all__ = ["apply_overrides", "parse_override"]


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=VALUE` -> (["a", "b", "c"], the YAML value). Raises SuiteError."""
    key, sep, value = text.partition("=")
    path = [p for p in key.strip().split(".")]
    if not sep or not key.strip() or any(not p for p in path):
        raise SuiteError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY, e.g. --set model.d_model=128 "
                         f"or --set axes.seq_len=[512,1024]")
    try:
        return path, parse_yaml_value(value)
    except ValueError as exc:
        raise SuiteError(f"--set {text!r}: the value is not valid YAML: {exc}") from None


def apply_overrides(raw: Any, sets: Sequence[str] = (), device: str | None = None,
                    dtype: str | None = None) -> Any:
    """The suite mapping `raw` with the overrides applied (a copy; `raw` is not changed)."""
    if not sets and device is None and dtype is None:
        return raw
    if not isinstance(raw, dict):
        return raw  # validation says what is wrong with it
    raw = copy.deepcopy(raw)
    items = [parse_override(s) + (s,) for s in sets]
    items += [(["axes", name], value, f"--{name} {value}") for name, value in (("device", device), ("dtype", dtype))
              if value is not None]
    for path, value, text in items:
        _apply(raw, path, value, text)
    return raw


def _tasks(raw: dict, editable: bool = False) -> list[dict]:
    """The suite's task entries that are mappings, to edit in place; with `editable`, a bare name
    first becomes {name: ...} (the same entry), so that it can take a setting. The form of
    `task:` is kept: one entry stays one entry and a list stays a list, so an override that sets
    nothing new changes no cell."""
    task = raw.get("task")
    if isinstance(task, str) and editable:
        task = raw["task"] = {"name": task}
    if isinstance(task, dict):
        return [task]
    if isinstance(task, list):
        if editable:
            task[:] = [{"name": e} if isinstance(e, str) else e for e in task]
        return [e for e in task if isinstance(e, dict)]
    return []  # a bare name, missing or malformed (validation says what is wrong with it)


def _names(raw: dict) -> list[str]:
    task = raw.get("task")
    entries = task if isinstance(task, list) else [task]
    return [str(e.get("name")) if isinstance(e, dict) else str(e) for e in entries if e is not None]


def _set(target: dict, path: list[str], value: Any, text: str) -> None:
    for part in path[:-1]:
        nxt = target.get(part)
        if nxt is None:
            nxt = target[part] = {}
        if not isinstance(nxt, dict):
            raise SuiteError(f"{text}: {part!r} is not a mapping in the suite, so {'.'.join(path)} cannot be set")
        target = nxt
    target[path[-1]] = value


def _apply(raw: dict, path: list[str], value: Any, text: str) -> None:
    head, rest = path[0], path[1:]
    if head == "task" and rest:
        named = [e for e in _tasks(raw, editable=True) if e.get("name") == rest[0]]
        if not named or len(rest) < 2:
            names = _names(raw)
            raise SuiteError(f"{text}: write task.<task name>.<key>, with a task of this suite: {', '.join(names)}")
        for entry in named:
            _set(entry, rest[1:], value, text)
        return
    if head == "params" and rest and len(_names(raw)) > 1:
        from harness.registry import TASKS

        owners = [e for e in _tasks(raw, editable=True)
                  if isinstance(e.get("name"), str) and e["name"] in TASKS.names()
                  and rest[0] in TASKS.get(e["name"]).Params.model_fields]
        if not owners:
            raise SuiteError(f"{text}: no task of this suite has a parameter {rest[0]!r}")
        for entry in owners:
            _set(entry, path, value, text)
        return
    _set(raw, path, value, text)
    if head in ("model", "axes") and rest:  # the override holds for every cell: entries setting it too
        for entry in _tasks(raw):
            section = entry.get(head)
            if isinstance(section, dict) and rest[0] in section:
                _set(entry, path, value, text)
