"""References between tasks: a parameter written `{from: <task>}` is the checkpoint of the cell
of that task with the same values on the axes both tasks have (docs/suites.md, "Train, then
evaluate"). `check_references` validates them per task entry; `match_producer` finds the one
producing cell of a consuming cell while the suite is expanded."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from harness.registry import TASKS
from harness.sweep.cell import REF_CELL, REF_FROM, Cell, canonical_json, pending_input
from harness.sweep.messages import fmt_loc, hint
from harness.sweep.schema import ModelOverrides, Suite, TaskEntry, axis_options

#: a task entry's expanded combinations: (axis key -> canonical JSON of its patch, the cell or
#: None when the combination is impossible)
Produced = list[tuple[dict[str, str], Cell | None]]


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and REF_FROM in value


def refs_in(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The parameters of `params` that are references, by name."""
    return {k: v for k, v in params.items() if is_ref(v)}


def with_placeholders(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with each reference replaced by a stand-in path, for the task's Params to check."""
    return {k: pending_input(str(v.get(REF_FROM)), "?") if is_ref(v) else v for k, v in params.items()}


def _producer_tasks() -> list[str]:
    return [n for n, cls in TASKS.items() if getattr(cls, "saves_checkpoint", False)]


def entry_axes(suite: Suite, entry: TaskEntry) -> list[str]:
    return list(dict.fromkeys(suite.axes_order + entry._axes_order))


def selector_json(suite: Suite, key: str, value: Any) -> str:
    """A selector `{from: task, <axis>: value}` as the canonical JSON of that axis's patch."""
    if key == "size":
        if isinstance(value, str):
            if value not in suite.sizes:
                known = ", ".join(map(repr, suite.sizes)) or "none"
                raise ValueError(f"unknown size preset {value!r}.{hint(value, list(suite.sizes))} "
                                 f"Defined presets: {known}")
            return canonical_json(suite.sizes[value].model_dump(exclude_unset=True))
        try:
            return canonical_json(ModelOverrides.model_validate(value).model_dump(exclude_unset=True))
        except ValidationError as exc:
            raise ValueError(f"not a size: {exc.errors()[0]['msg']}") from None
    if key.startswith("params."):
        return canonical_json({key[len("params."):]: value})
    return canonical_json({key: value})


def shown(key: str, patch_json: str) -> str:
    """An axis value, from its patch's JSON, as a suite would write it."""
    import json

    if key == "size":
        return patch_json
    value = json.loads(patch_json)[key[len("params."):] if key.startswith("params.") else key]
    return value if isinstance(value, str) else canonical_json(value)


def ref_text(ref: dict[str, Any]) -> str:
    inner = ", ".join(f"{k}: {v if isinstance(v, str) else canonical_json(v)}" for k, v in ref.items())
    return "{" + inner + "}"


def entry_refs(suite: Suite, i: int, entry: TaskEntry) -> list[tuple[tuple, dict[str, Any]]]:
    """(location, reference) of every reference that entry i may see: its params and the
    `params.<name>` axis values (the suite's and its own) of its parameters."""
    fields = set(TASKS.get(entry.name).Params.model_fields)
    out: list[tuple[tuple, dict[str, Any]]] = []
    single = len(suite.task) == 1
    for k, v in entry.params.items():
        if is_ref(v):
            out.append((("task", i, "params", k), v))
    if single:
        out += [(("params", k), v) for k, v in suite.params.items() if is_ref(v) and k not in entry.params]
    for where, axes in ((("axes",), suite.axes), (("task", i, "axes"), entry.axes)):
        for k, values in (axes.params or {}).items():
            if k in fields:
                out += [((*where, f"params.{k}", j), v) for j, v in enumerate(values) if is_ref(v)]
    return out


def check_references(suite: Suite) -> list[str]:
    """Every reference names a task of this suite that saves a checkpoint, selects only axes of
    that task (by values it has), and no task depends on itself, directly or through others."""
    errors: list[str] = []
    names = [e.name for e in suite.task]
    producers = _producer_tasks()
    edges: dict[int, set[int]] = {i: set() for i in range(len(suite.task))}
    for i, entry in enumerate(suite.task):
        for loc, ref in entry_refs(suite, i, entry):
            where = fmt_loc(loc)
            problem = _source_problem(where, ref, names, producers)
            if problem:
                errors.append(problem)
                continue
            targets = [j for j, n in enumerate(names) if n == ref[REF_FROM]]
            edges[i].update(targets)
            errors += _selector_problems(suite, where, ref, targets)
    for cycle in _cycles(edges):
        path = " -> ".join(f"task[{j}] ({names[j]})" for j in cycle + cycle[:1])
        errors.append(
            f"task[{cycle[0]}]: a cycle of references: {path}. A task cannot consume its own checkpoint, "
            f"directly or through others; remove one of the references"
        )
    return errors


def _source_problem(where: str, ref: dict[str, Any], names: list[str], producers: list[str]) -> str | None:
    """Why the task a reference comes from cannot be its source (not named, not in this suite,
    saves no checkpoint), or None."""
    src = ref.get(REF_FROM)
    if not isinstance(src, str):
        return f"{where}: a reference is {{from: <task>}}, naming a task of this suite; got {ref_text(ref)}"
    if src not in names:
        return (f"{where}: {ref_text(ref)} names no task of this suite.{hint(src, names)} "
                f"Tasks of this suite: {', '.join(dict.fromkeys(names))}"
                + ("" if src in TASKS.names() else f" (and {src!r} is not a registered task)"))
    if not getattr(TASKS.get(src), "saves_checkpoint", False):
        return (f"{where}: task {src!r} saves no checkpoint, so nothing can come from it. "
                f"Tasks that do: {', '.join(producers) or 'none'}")
    return None


def _selector_problems(suite: Suite, where: str, ref: dict[str, Any], targets: list[int]) -> list[str]:
    """What is wrong with the axis values a reference selects its cell by: the cell key (set by
    the suite), a key that is not an axis of the source task, a value it does not have."""
    src = ref[REF_FROM]
    errors: list[str] = []
    axes = list(dict.fromkeys(k for j in targets for k in entry_axes(suite, suite.task[j])))
    for key, val in ref.items():
        if key == REF_FROM:
            continue
        if key == REF_CELL:
            errors.append(f"{where}: {key!r} is set by the suite (the producing cell is matched by its axes); "
                          f"select it by axis values instead, e.g. {{from: {src}, seed: 0}}")
            continue
        if key not in axes:
            errors.append(
                f"{where}: {key!r} is not an axis of task {src!r}, so it cannot select its cell."
                f"{hint(key, axes)} Its axes: {', '.join(axes) or 'none'}"
            )
            continue
        try:
            want = selector_json(suite, key, val)
        except ValueError as exc:
            errors.append(f"{where}.{key}: {exc}")
            continue
        have = list(dict.fromkeys(
            canonical_json(patch) for j in targets
            for _, patch in axis_options(suite, suite.task[j]).get(key, [])
        ))
        if want not in have:
            errors.append(
                f"{where}.{key}: task {src!r} has no cell with {key}={shown(key, want)}; "
                f"its values: {', '.join(shown(key, h) for h in have)}"
            )
    return errors


def _cycles(edges: dict[int, set[int]]) -> list[list[int]]:
    """The distinct cycles found by depth-first search (each once, from its smallest node)."""
    found: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()

    def visit(node: int, path: list[int]) -> None:
        for nxt in sorted(edges[node]):
            if nxt in path:
                cyc = path[path.index(nxt):]
                k = cyc.index(min(cyc))
                cyc = cyc[k:] + cyc[:k]
                if tuple(cyc) not in seen:
                    seen.add(tuple(cyc))
                    found.append(cyc)
            elif len(path) <= len(edges):
                visit(nxt, path + [nxt])

    for start in sorted(edges):
        visit(start, [start])
    return found


def entry_order(suite: Suite) -> list[int]:
    """Task entries, producers before their consumers (written order otherwise)."""
    names = [e.name for e in suite.task]
    deps = {i: {j for _, ref in entry_refs(suite, i, e) for j, n in enumerate(names) if n == ref.get(REF_FROM)} - {i}
            for i, e in enumerate(suite.task)}
    order: list[int] = []
    while len(order) < len(deps):
        ready = [i for i in deps if i not in order and deps[i] <= set(order)]
        order.append(ready[0] if ready else min(i for i in deps if i not in order))  # a cycle: already an error
    return order


def match_producer(
    suite: Suite, ref: dict[str, Any], values: dict[str, str], produced: dict[int, Produced]
) -> tuple[Cell | None, str, str]:
    """The one cell a consumer's reference names: a cell of task `ref["from"]` with the
    consumer's value on every axis both have, and the reference's own value on each axis it
    selects. Returns (cell, "", "") or (None, "invalid" | "error", why)."""
    src = str(ref[REF_FROM])
    selectors = {k: selector_json(suite, k, v) for k, v in ref.items() if k != REF_FROM}
    cands: list[tuple[dict[str, str], Cell | None]] = []
    wanted: dict[str, str] = {}
    for j, entry in enumerate(suite.task):
        if entry.name != src or j not in produced:
            continue
        target = {k: values[k] for k in axis_options(suite, entry) if k in values}
        target.update(selectors)
        wanted.update(target)
        cands += [(pv, c) for pv, c in produced[j] if all(pv.get(k) == v for k, v in target.items())]
    valid = {c.cell_id: (pv, c) for pv, c in cands if c is not None}
    if len(valid) == 1:
        return next(iter(valid.values()))[1], "", ""
    if cands and not valid:
        return None, "invalid", f"the {src!r} cell it names is an impossible combination (see that task's cells)"
    if not cands:
        every = [pv for j, e in enumerate(suite.task) if e.name == src for pv, _ in produced.get(j, [])]
        for key, want in wanted.items():
            have = list(dict.fromkeys(pv[key] for pv in every if key in pv))
            if want not in have:
                example = shown(key, have[0]) if have else "..."
                return None, "error", (
                    f"task {src!r} has no cell with {key}={shown(key, want)} (its values: "
                    f"{', '.join(shown(key, h) for h in have)}). Give both tasks the same {key} values "
                    f"(one suite-level axis), or select the cell in the reference, e.g. "
                    f"{{from: {src}, {key}: {example}}}"
                )
        return None, "error", f"task {src!r} has no cell with these axis values"
    rows = [pv for pv, _ in valid.values()]
    differ = [k for k in dict.fromkeys(k for pv in rows for k in pv) if len({pv.get(k) for pv in rows}) > 1]
    key = differ[0] if differ else "?"
    differing = "; ".join(f"{k}: {', '.join(dict.fromkeys(shown(k, pv[k]) for pv in rows if k in pv))}" for k in differ)
    example = shown(key, rows[0][key]) if differ else "..."
    return None, "error", (
        f"matches {len(valid)} cells of task {src!r}, which differ in {differing}. Select one in the "
        f"reference, e.g. {{from: {src}, {key}: {example}}}, or make {key} an axis of the suite "
        f"(shared by both tasks) so that each consuming cell has its own"
    )
