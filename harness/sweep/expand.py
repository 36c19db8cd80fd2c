"""Expanding a validated suite into its cells: the product of the axes per task, each model
filled in and canonicalised, impossible combinations reported (or skipped), references resolved
to the producing cell, duplicates merged."""
from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Optional

from harness.model.config import ModelConfig
from harness.model.resolve import resolve_model
from harness.registry import TASKS
from harness.sweep.cell import REF_CELL, REF_FROM, RUN_DEFAULTS, Cell, canonical_json, pending_input
from harness.sweep.messages import SuiteError
from harness.sweep.references import Produced, entry_axes, entry_order, match_producer, ref_text, refs_in
from harness.sweep.schema import Suite, axis_options, base_params

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


def expand_cells(suite: Suite, notes: Optional[list[str]] = None) -> list[Cell]:
    """The suite's cells, in axis order (tasks outermost), duplicates merged.

    A parameter written `{from: <task>}` becomes `{"from": <task>, "cell": <producer cell_id>}`:
    the cell of that task with the same values on every axis both tasks have (and on the axes
    the reference selects), whose model the consuming cell takes. Producing tasks are expanded
    first. Raises SuiteError naming every impossible combination, unless the suite sets
    `skip_invalid: true` (then they are dropped and a note is appended to `notes`), and every
    reference that matches no cell or several.
    """
    where = str(suite.source) if suite.source else suite.name
    notes = notes if notes is not None else []
    suite_model = suite.model.model_dump(exclude_unset=True)
    per_entry: dict[int, list[Cell]] = {}
    produced: dict[int, Produced] = {}
    invalid: dict[str, list[str]] = {}
    unresolved: dict[str, list[str]] = {}
    n_combos = 0
    cuda: Optional[bool] = None
    for i in entry_order(suite):
        entry = suite.task[i]
        task_cls = TASKS.get(entry.name)
        task = task_cls()
        options = axis_options(suite, entry)
        keys = list(options)
        base_model = {**suite_model, **entry.model.model_dump(exclude_unset=True)}
        axes_order = entry_axes(suite, entry)
        fields = set(task_cls.Params.model_fields)
        out, rec = per_entry.setdefault(i, []), produced.setdefault(i, [])
        for combo in itertools.product(*options.values()):
            n_combos += 1
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
            describe = lambda: _describe_combo(entry.name, full_model, run, params, axes_order)  # noqa: E731
            inputs: dict[str, Cell] = {}
            blocked = False
            for name, ref in refs_in(params).items():
                found, kind, msg = match_producer(suite, ref, values, produced)
                if found is not None:
                    inputs[name] = found
                    continue
                blocked = True
                text = f"params.{name} {ref_text(ref)}: {msg}"
                (invalid if kind == "invalid" else unresolved).setdefault(text, []).append(describe())
            if blocked:
                rec.append((values, None))
                continue
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
                    why = f"task {entry.name!r} sets {canonical_json(imposed)} on the model: {why}"
                invalid.setdefault(why, []).append(describe())
                rec.append((values, None))
                continue
            if run["device"] == "auto":
                if cuda is None:
                    cuda = _cuda_available()
                run["device"] = "cuda" if cuda else "cpu"
            refs = {n: {REF_FROM: c.task, REF_CELL: c.cell_id} for n, c in inputs.items()}
            cell = Cell(
                suite=suite.name,
                task=entry.name,
                params={**resolved_params, **refs},
                model=full_model,
                task_modules=tuple(suite.task_modules),
                **run,
            )
            try:  # the task sees a stand-in path for a checkpoint that does not exist yet
                task.check(dataclasses.replace(cell, params=resolved_params) if inputs else cell)
            except ValueError as exc:
                invalid.setdefault(f"task {entry.name!r}: {exc}", []).append(describe())
                rec.append((values, None))
                continue
            rec.append((values, cell))
            out.append(cell)
    n_invalid = sum(map(len, invalid.values()))
    problems: list[str] = []
    if invalid and not suite.skip_invalid:
        problems.append(
            f"{where}: {n_invalid} impossible combination{'s' if n_invalid > 1 else ''} of axis values:\n"
            + _listing(invalid) + "\n  Fix the axes, or set `skip_invalid: true` to drop such combinations."
        )
    if unresolved:
        n = sum(map(len, unresolved.values()))
        problems.append(
            f"{where}: {n} cell{'s' if n > 1 else ''} whose reference to another task's checkpoint "
            f"matches no cell or several:\n" + _listing(unresolved)
        )
    if invalid and suite.skip_invalid and not any(per_entry.values()):
        problems.append(
            f"{where}: every combination of axis values is impossible ({n_invalid}), so `skip_invalid: true` "
            f"leaves no cell to run:\n" + _listing(invalid) + "\n  Fix the axes so that some combination is possible."
        )
    if problems:
        raise SuiteError("\n".join(problems))
    if invalid:
        notes.append(f"{where}: skipped {n_invalid} impossible combination(s) (skip_invalid: true):")
        notes += [f"  {len(c)} x {msg.splitlines()[0]}" for msg, c in invalid.items()]
    cells: dict[str, Cell] = {}
    for i in range(len(suite.task)):  # tasks in the order written
        for cell in per_entry.get(i, []):
            cells.setdefault(cell.cell_id, cell)
    merged = n_combos - n_invalid - len(cells)
    if merged:
        notes.append(
            f"{where}: merged {merged} duplicate combination(s) into existing cells "
            f"(e.g. Transformer cells do not depend on the variant)"
        )
    return list(cells.values())


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
