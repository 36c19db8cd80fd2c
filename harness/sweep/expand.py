"""Expanding a validated suite into its cells: the product of the axes per task, each model
filled in and canonicalised, impossible combinations reported (or skipped), references resolved
to the producing cell, duplicates merged."""
from __future__ import annotations

import copy
import dataclasses
import functools
import itertools

import pandas as pd

from harness.model.config import ModelConfig
from harness.model.resolve import resolve_model
from harness.registry import TASKS
from harness.sweep.cell import REF_CELL, REF_FROM, RUN_DEFAULTS, Cell, canonical_json, pending_input
from harness.sweep.messages import SuiteError
from harness.sweep.references import Produced, entry_axes, entry_order, match_producer, ref_text, refs_in
from harness.sweep.schema import Suite, axis_options, base_params
from harness.sweep.search import search_cells

__all__ = ["expand_cells"]


def _describe_combo(task: str, model: dict, run: dict, params: dict, keys: list[str]) -> str:
    vals = {"task": task, **{k: model[k] for k in ("variant", "layout", "n_layers", "d_model", "n_heads")}}
    for key in keys:
        if key.startswith("params."):
            vals[key] = params.get(key[7:])
        elif key in run:
            vals[key] = run[key]
        elif key in model:
            vals[key] = model[key]
    return " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in vals.items())


@dataclasses.dataclass
class _Expansion:
    """What expanding a suite collects: the cells per task entry, what each entry produced (for
    references), and the problems found, each with the combinations that have it."""

    suite: Suite
    per_entry: dict[int, list[Cell]] = dataclasses.field(default_factory=dict)
    produced: dict[int, Produced] = dataclasses.field(default_factory=dict)
    invalid: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    unresolved: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    n_combos: int = 0
    cuda: bool | None = None

    @property
    def where(self) -> str:
        return str(self.suite.source) if self.suite.source else self.suite.name

    @property
    def n_invalid(self) -> int:
        return sum(map(len, self.invalid.values()))


def expand_cells(suite: Suite, notes: list[str] | None = None, table: pd.DataFrame | None = None) -> list[Cell]:
    """The suite's cells, in axis order (tasks outermost), duplicates merged.

    A parameter written `{from: <task>}` becomes `{"from": <task>, "cell": <producer cell_id>}`:
    the cell of that task with the same values on every axis both tasks have (and on the axes
    the reference selects), whose model the consuming cell takes. Producing tasks are expanded
    first. Raises SuiteError naming every impossible combination, unless the suite sets
    `skip_invalid: true` (then they are dropped and a note is appended to `notes`), and every
    reference that matches no cell or several.

    A suite with a `placement_search:` block expands to the cells its search needs given the
    stored results `table` (harness.sweep.search): with none stored, round 1 and the fixed policies.
    """
    notes = notes if notes is not None else []
    if suite.placement_search is not None:
        return search_cells(suite, table, expand_cells, notes)
    exp = _Expansion(suite)
    for i in entry_order(suite):
        _expand_entry(exp, i)
    _raise_problems(exp)
    if exp.invalid:
        notes.append(f"{exp.where}: skipped {exp.n_invalid} impossible combination(s) (skip_invalid: true):")
        notes += [f"  {len(c)} x {msg.splitlines()[0]}" for msg, c in exp.invalid.items()]
    cells: dict[str, Cell] = {}
    for i in range(len(suite.task)):  # tasks in the order written
        for cell in exp.per_entry.get(i, []):
            cells.setdefault(cell.cell_id, cell)
    merged = exp.n_combos - exp.n_invalid - len(cells)
    if merged:
        notes.append(
            f"{exp.where}: merged {merged} duplicate combination(s) into existing cells "
            f"(e.g. Transformer cells do not depend on the variant)"
        )
    return list(cells.values())


def _expand_entry(exp: _Expansion, i: int) -> None:
    """Every combination of the axes of task entry `i`: a cell, or a problem on record."""
    suite, entry = exp.suite, exp.suite.task[i]
    task_cls = TASKS.get(entry.name)
    task = task_cls()
    options = axis_options(suite, entry)
    keys = list(options)
    base_model = {**suite.model.model_dump(exclude_unset=True), **entry.model.model_dump(exclude_unset=True)}
    axes_order = entry_axes(suite, entry)
    fields = set(task_cls.Params.model_fields)
    out, rec = exp.per_entry.setdefault(i, []), exp.produced.setdefault(i, [])
    for combo in itertools.product(*options.values()):
        exp.n_combos += 1
        values = {k: canonical_json(patch) for k, (_, patch) in zip(keys, combo)}
        model, run, params = dict(base_model), dict(RUN_DEFAULTS), base_params(suite, entry)
        for kind, patch in combo:
            if kind == "model":
                model.update(copy.deepcopy(patch))
            elif kind == "run":
                run.update(patch)
            elif set(patch) <= fields:  # a parameter axis of another task: not ours
                params.update(patch)
        full_model = {**ModelConfig().to_dict(), **model}
        describe = functools.partial(_describe_combo, entry.name, full_model, run, params, axes_order)
        cell = _combination_cell(exp, entry.name, task, values, full_model, run, params, describe)
        rec.append((values, cell))
        if cell is not None:
            out.append(cell)


def _combination_cell(exp: _Expansion, task_name: str, task, values: dict, full_model: dict, run: dict,
                      params: dict, describe) -> Cell | None:
    """One combination's cell: references resolved, params and model validated, the task's own
    check passed; None (with the problem recorded) when it cannot be a cell."""
    task_cls = type(task)
    inputs: dict[str, Cell] = {}
    for name, ref in refs_in(params).items():
        found, kind, msg = match_producer(exp.suite, ref, values, exp.produced)
        if found is None:
            text = f"params.{name} {ref_text(ref)}: {msg}"
            (exp.invalid if kind == "invalid" else exp.unresolved).setdefault(text, []).append(describe())
        inputs[name] = found
    if any(c is None for c in inputs.values()):
        return None
    imposed = None
    try:
        checked = {**params, **{n: pending_input(c.task, c.cell_id) for n, c in inputs.items()}}
        resolved_params = task_cls.Params.model_validate(checked).identity()
        if inputs:  # the model is the one the producing cell trained (the first, if several)
            full_model = dict(next(iter(inputs.values())).model)
        else:
            imposed = task_cls.model_from_params(resolved_params)  # e.g. a checkpoint's own shape
            if imposed:
                full_model = {**full_model, **imposed}
            full_model = resolve_model(full_model)
    except (ValueError, TypeError) as exc:
        why = str(exc)
        if imposed:  # say where a setting the user did not write came from
            why = f"task {task_name!r} sets {canonical_json(imposed)} on the model: {why}"
        exp.invalid.setdefault(why, []).append(describe())
        return None
    if run["device"] == "auto":
        if exp.cuda is None:
            exp.cuda = _cuda_available()
        run = {**run, "device": "cuda" if exp.cuda else "cpu"}
    refs = {n: {REF_FROM: c.task, REF_CELL: c.cell_id} for n, c in inputs.items()}
    cell = Cell(suite=exp.suite.name, task=task_name, params={**resolved_params, **refs}, model=full_model,
                task_modules=tuple(exp.suite.task_modules), **run)
    try:  # the task sees a stand-in path for a checkpoint that does not exist yet
        task.check(dataclasses.replace(cell, params=resolved_params) if inputs else cell)
    except ValueError as exc:
        exp.invalid.setdefault(f"task {task_name!r}: {exc}", []).append(describe())
        return None
    return cell


def _raise_problems(exp: _Expansion) -> None:
    """SuiteError naming every impossible combination (unless skipped) and unresolved reference."""
    where, invalid, n_invalid = exp.where, exp.invalid, exp.n_invalid
    problems: list[str] = []
    if invalid and not exp.suite.skip_invalid:
        problems.append(
            f"{where}: {n_invalid} impossible combination{'s' if n_invalid > 1 else ''} of axis values:\n"
            + _listing(invalid) + "\n  Fix the axes, or set `skip_invalid: true` to drop such combinations."
        )
    if exp.unresolved:
        n = sum(map(len, exp.unresolved.values()))
        problems.append(
            f"{where}: {n} cell{'s' if n > 1 else ''} whose reference to another task's checkpoint "
            f"matches no cell or several:\n" + _listing(exp.unresolved)
        )
    if invalid and exp.suite.skip_invalid and not any(exp.per_entry.values()):
        problems.append(
            f"{where}: every combination of axis values is impossible ({n_invalid}), so `skip_invalid: true` "
            f"leaves no cell to run:\n" + _listing(invalid) + "\n  Fix the axes so that some combination is possible."
        )
    if problems:
        raise SuiteError("\n".join(problems))


def _listing(problems: dict[str, list[str]]) -> str:
    """One entry per problem: the first combination that has it (and how many more), then why."""
    lines = []
    for msg, combos in problems.items():
        more = f" (and {len(combos) - 1} more like it)" if len(combos) > 1 else ""
        lines.append(f"  - {combos[0]}{more}:\n      {msg}")
    return "\n".join(lines)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False
