"""Suites: a YAML file → a validated `Suite` → the cells of the sweep (the product of its axes).

Everything is checked before anything runs: unknown keys, wrong types, unknown variants, tasks
and size presets (pydantic, extra="forbid", strict types), then every cell of the product
(layout vs depth, head counts, mixer_kwargs, the task's own `check`). All problems of a file are
reported at once as one `SuiteError` naming the file, the key and, where one is close, a
suggestion. The format is documented in docs/suites.md.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import itertools
import os
import re
import sys
import typing
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from harness.runtime.devices import BACKENDS
from harness.sweep.cell import DTYPE_NAMES, REF_CELL, REF_FROM, RUN_DEFAULTS, Cell, canonical_json, pending_input
from harness.model.config import ModelConfig
from harness.model.layout import ATTN, LINEAR, layout_name, resolve_layout
from harness.registry import TASKS, VARIANTS

__all__ = ["Suite", "SuiteError", "Cell", "load_suite", "expand_cells", "find_suite", "suite_dirs"]


class SuiteError(ValueError):
    """An invalid suite. The message names the file, every bad key and a suggestion."""


# ---------------------------------------------------------------------------------------------
# YAML: safe, no sexagesimal ints (YAML 1.1 reads an unquoted 3:1 as the number 181), and a
# repeated key is an error instead of silently keeping the last one.


class _SuiteLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                dup = key in seen
                seen.add(key)
            except TypeError:
                continue
            if dup:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


_INT_TAG = "tag:yaml.org,2002:int"
_SuiteLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _INT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SuiteLoader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as stream:  # a stream, so YAML errors name the file
            return yaml.load(stream, Loader=_SuiteLoader)
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # a binary file, or a text file in another encoding
        raise SuiteError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a suite is a YAML text "
                         f"file (docs/suites.md)") from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML:\n{exc}") from None


# ---------------------------------------------------------------------------------------------
# Schema


def _hint(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(name), choices, n=2, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _check_variant(name: str) -> str:
    names = VARIANTS.names()
    if name not in names:
        raise ValueError(f"unknown variant {name!r}.{_hint(name, names)} Registered variants: {', '.join(names)}")
    return name


def _check_task(name: str) -> str:
    names = TASKS.names()
    if name not in names:
        raise ValueError(
            f"unknown task {name!r}.{_hint(name, names)} Registered tasks: {', '.join(names)} "
            f"(tasks defined outside harness need their module listed under task_modules)"
        )
    return name


#: the largest integer a results column holds (Int64): a bigger one is refused here, not when the
#: cell's row is written (which would stop the sweep)
INT64_MAX = 2**63 - 1
#: a suite name names its results directory (results/<name>) and report directory: keep it a
#: valid file name on any file system, with room for the paths around it
MAX_NAME_LENGTH = 100


def _check_name_length(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"the suite name has {len(name)} characters; at most {MAX_NAME_LENGTH} (it names the "
                         f"results directory results/<name>). Shorten `name:`")
    return name


VariantName = Annotated[str, AfterValidator(_check_variant)]
TaskName = Annotated[str, AfterValidator(_check_task)]
PositiveInt = Annotated[int, Field(gt=0, le=INT64_MAX)]
Device = Annotated[str, StringConstraints(pattern=r"^(cpu|auto|mps|cuda(:\d+)?)$")]
DtypeName = Literal[DTYPE_NAMES]  # type: ignore[valid-type]
Backend = Literal[BACKENDS]  # type: ignore[valid-type]

_MODEL_TYPES = typing.get_type_hints(ModelConfig)
MODEL_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]


def _model_field_type(name: str) -> Any:
    if name == "variant":
        return VariantName
    if name in ("n_layers", "d_model", "n_heads", "vocab_size", "mlp_multiple"):
        return PositiveInt
    return _MODEL_TYPES[name]


# Partial ModelConfig: any subset of its fields, strictly typed ("4" is not an int).
ModelOverrides = create_model(  # type: ignore[call-overload]
    "ModelOverrides",
    __config__=ConfigDict(extra="forbid", strict=True),
    **{name: (Optional[_model_field_type(name)], None) for name in MODEL_FIELDS},
)

_RUN_TYPES: dict[str, Any] = {
    "seq_len": PositiveInt,
    "batch": PositiveInt,
    "seed": Annotated[int, Field(ge=0, le=INT64_MAX)],
    "dtype": DtypeName,
    "device": Device,
    "backend": Backend,
}
assert set(_RUN_TYPES) == set(RUN_DEFAULTS)


def _axis(tp: Any) -> Any:
    return (Optional[Annotated[list[tp], Field(min_length=1)]], None)


class _AxesBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        """`params.<name>` keys go under `params`; a scalar axis is a one-value list."""
        if data is None:
            return {}
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for key, val in data.items():
            if isinstance(key, str) and key.startswith("params."):
                params[key[len("params."):]] = val
            elif key == "params" and isinstance(val, dict):
                params.update(val)
            else:
                out[key] = val
        if params:
            out["params"] = params
        for key, val in out.items():
            if key == "params":
                out[key] = {k: v if isinstance(v, list) else [v] for k, v in val.items()}
            elif not isinstance(val, list):
                out[key] = [val]
        return out

    @field_validator("size", mode="before", check_fields=False)
    @classmethod
    def _resolve_presets(cls, value: Any, info: ValidationInfo) -> Any:
        """A size may be named: a key of the suite's `sizes:` mapping."""
        presets = (info.context or {}).get("sizes") or {}
        if not isinstance(value, list) or not isinstance(presets, dict):
            return value
        out = []
        for item in value:
            if isinstance(item, str):
                if item not in presets:
                    known = ", ".join(map(repr, presets)) or "none (add a top-level `sizes:` mapping)"
                    raise ValueError(f"unknown size preset {item!r}.{_hint(item, list(presets))} Defined presets: {known}")
                item = copy.deepcopy(presets[item])
            out.append(item)
        return out


Axes = create_model(  # type: ignore[call-overload]
    "Axes",
    __base__=_AxesBase,
    **{name: _axis(_model_field_type(name)) for name in MODEL_FIELDS},
    **{name: _axis(tp) for name, tp in _RUN_TYPES.items()},
    size=_axis(ModelOverrides),
    params=(Optional[dict[str, Annotated[list[Any], Field(min_length=1)]]], None),
)


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: TaskName
    params: dict[str, Any] = Field(default_factory=dict)
    #: this task's own model settings and axes, over the suite's (same key: the task's wins)
    model: ModelOverrides = Field(default_factory=ModelOverrides)  # type: ignore[valid-type]
    axes: Axes = Field(default_factory=Axes)  # type: ignore[valid-type]

    _axes_order: list[str] = PrivateAttr(default_factory=list)


class Suite(BaseModel):
    """A validated suite. Build it with `load_suite` (or `Suite.from_dict`), expand it with
    `expand_cells`."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"), AfterValidator(_check_name_length)]
    description: str = ""
    task: list[TaskEntry]
    params: dict[str, Any] = Field(default_factory=dict)
    task_modules: list[str] = Field(default_factory=list)
    model: ModelOverrides = Field(default_factory=ModelOverrides)  # type: ignore[valid-type]
    sizes: dict[str, ModelOverrides] = Field(default_factory=dict)  # type: ignore[valid-type]
    axes: Axes = Field(default_factory=Axes)  # type: ignore[valid-type]
    skip_invalid: bool = False

    _source: Optional[Path] = PrivateAttr(default=None)
    _axes_order: list[str] = PrivateAttr(default_factory=list)

    @field_validator("task", mode="before")
    @classmethod
    def _task_forms(cls, value: Any) -> Any:
        """`task: analytic`, `task: [a, b]` and `task: [{name: a, params: {...}}]` all work."""
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @property
    def source(self) -> Optional[Path]:
        return self._source

    @property
    def axes_order(self) -> list[str]:
        """Axis keys in the order written (the product's outermost first)."""
        return list(self._axes_order)

    @classmethod
    def from_dict(cls, raw: Any, source: Optional[Path] = None) -> "Suite":
        return _validate(raw, source)


# ---------------------------------------------------------------------------------------------
# Validation and error messages


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _unwrap(tp: Any, part: Any = None) -> Any:
    """Follow `tp` one level towards `part` through Optional / Annotated / list / dict."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is Union:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
            if len(args) != 1:
                return tp
        else:
            break
    origin = typing.get_origin(tp)
    if part is None:
        return tp
    if origin is list and isinstance(part, int):
        return typing.get_args(tp)[0]
    if origin is dict:
        return typing.get_args(tp)[1]
    if isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
        return tp.model_fields[part].annotation
    return None


def _allowed_keys(root: type[BaseModel], parent: tuple) -> list[str]:
    tp: Any = root
    for part in parent:
        tp = _unwrap(tp, part)
        if tp is None:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        keys = list(tp.model_fields)
        if tp is Axes:
            keys = [k for k in keys if k != "params"] + ["params.<name>"]
        return keys
    return []


def _describe(err: dict, root: type[BaseModel], prefix: tuple = ()) -> str:
    loc = prefix + tuple(err["loc"])
    where = _fmt_loc(loc)
    if err["type"] == "extra_forbidden":
        key = loc[-1]
        allowed = _allowed_keys(root, tuple(err["loc"][:-1]))
        hint = _hint(str(key), allowed)
        return f"{where}: unknown key {key!r}.{hint}" + (f" Allowed here: {', '.join(allowed)}" if allowed else "")
    if err["type"] == "missing":
        return f"{where}: required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        return f"{where}: {msg[len('Value error, '):]}"
    got = repr(err.get("input"))
    return f"{where}: {msg} (got {got if len(got) <= 120 else got[:117] + '...'})"


def _big_ints(value: Any, loc: tuple = ()) -> list[str]:
    """Where `value` (raw YAML) holds an integer that does not fit the table's 64-bit columns."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            return [f"{_fmt_loc(loc)}: the integer {value} is out of range; integers must fit in 64 bits "
                    f"(at most {INT64_MAX})"]
        return []
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _big_ints(v, (*loc, k))]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _big_ints(v, (*loc, i))]
    return []


def _import_task_modules(names: list[str], extra_paths: tuple[str, ...] = ()) -> None:
    """Import modules that register extra tasks. The working directory is searched too (as
    `python -m` does), so a suite can name e.g. `tests.helpers_tasks` when run from a checkout."""
    from harness.runtime.isolate import add_import_paths

    add_import_paths((*extra_paths, os.getcwd()))
    for name in names:
        importlib.import_module(name)


def _validate(raw: Any, source: Optional[Path]) -> "Suite":
    where = str(source) if source else "<suite>"
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite must be a YAML mapping (name:, task:, axes:, ...), got {type(raw).__name__}")
    raw = dict(raw)
    if source is not None and "name" not in raw:
        raw["name"] = Path(source).stem
    errors: list[str] = []
    big = _big_ints(raw)
    if big:  # before anything else: pydantic and the tasks would give less clear messages
        raise SuiteError(_error_text(where, big))
    mods = raw.get("task_modules") or []
    if isinstance(mods, list):
        for i, mod in enumerate(mods):
            try:
                _import_task_modules([mod])
            except Exception as exc:  # report, do not crash: it is a bad suite entry
                errors.append(f"task_modules[{i}]: cannot import {mod!r}: {type(exc).__name__}: {exc}")
    sizes = raw.get("sizes") if isinstance(raw.get("sizes"), dict) else {}
    try:
        suite = Suite.model_validate(raw, context={"sizes": sizes})
    except ValidationError as exc:
        errors += [_describe(e, Suite) for e in exc.errors()]
        raise SuiteError(_error_text(where, errors)) from None
    suite._source = Path(source) if source else None
    suite._axes_order = _order(raw.get("axes"))
    raw_tasks = raw.get("task") if isinstance(raw.get("task"), list) else []
    for entry, raw_entry in zip(suite.task, raw_tasks):
        if isinstance(raw_entry, dict):
            entry._axes_order = _order(raw_entry.get("axes"))
    errors += _check_semantics(suite)
    if errors:
        raise SuiteError(_error_text(where, errors))
    return suite


def _error_text(where: str, errors: list[str]) -> str:
    lines = "\n".join(f"  - {e}" for e in errors)
    return f"{where}: invalid suite ({len(errors)} problem{'s' if len(errors) > 1 else ''}):\n{lines}"


def _check_semantics(suite: Suite) -> list[str]:
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
        base = _placeholders(_base_params(suite, entry))
        loc: tuple = ("params",) if len(suite.task) == 1 and suite.params else ("task", i, "params")
        try:
            params_cls.model_validate(base)
        except ValidationError as exc:
            errors += [_describe(e, params_cls, loc) for e in exc.errors()]
    param_fields = {e.name: TASKS.get(e.name).Params for e in suite.task}
    for key, values in (suite.axes.params or {}).items():
        owners = [n for n, p in param_fields.items() if key in p.model_fields]
        if not owners:
            known = sorted({f for p in param_fields.values() for f in p.model_fields})
            errors.append(
                f"axes.params.{key}: no task of this suite has a parameter {key!r}.{_hint(key, known)} "
                f"Parameters: {', '.join(known) or 'none'}"
            )
            continue
        for entry in suite.task:
            if entry.name not in owners:
                continue
            params_cls = param_fields[entry.name]
            for j, val in enumerate(values):
                try:
                    params_cls.model_validate(_placeholders({**_base_params(suite, entry), key: val}))
                except ValidationError as exc:
                    errors += [
                        _describe({**e, "loc": e["loc"][1:]}, params_cls, ("axes", f"params.{key}", j))
                        for e in exc.errors()
                        if e["loc"][:1] == (key,)
                    ]
    errors += _check_references(suite)
    return errors


def _base_params(suite: Suite, entry: TaskEntry) -> dict[str, Any]:
    return {**suite.params, **entry.params} if len(suite.task) == 1 else dict(entry.params)


# ---------------------------------------------------------------------------------------------
# References between tasks: a parameter written `{from: <task>}` is the checkpoint of the cell of
# that task with the same values on the axes both tasks have (docs/suites.md, "Train, then
# evaluate"). Checked here per task entry; matched cell by cell in `expand_cells`.


def _is_ref(value: Any) -> bool:
    return isinstance(value, dict) and REF_FROM in value


def _refs(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The parameters of `params` that are references, by name."""
    return {k: v for k, v in params.items() if _is_ref(v)}


def _placeholders(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with each reference replaced by a stand-in path, for the task's Params to check."""
    return {k: pending_input(str(v.get(REF_FROM)), "?") if _is_ref(v) else v for k, v in params.items()}


def _producer_tasks() -> list[str]:
    return [n for n, cls in TASKS.items() if getattr(cls, "saves_checkpoint", False)]


def _entry_axes(suite: Suite, entry: TaskEntry) -> list[str]:
    return list(dict.fromkeys(suite.axes_order + entry._axes_order))


def _selector_json(suite: Suite, key: str, value: Any) -> str:
    """A selector `{from: task, <axis>: value}` as the canonical JSON of that axis's patch."""
    if key == "size":
        if isinstance(value, str):
            if value not in suite.sizes:
                known = ", ".join(map(repr, suite.sizes)) or "none"
                raise ValueError(f"unknown size preset {value!r}.{_hint(value, list(suite.sizes))} Defined presets: {known}")
            return canonical_json(suite.sizes[value].model_dump(exclude_unset=True))
        try:
            return canonical_json(ModelOverrides.model_validate(value).model_dump(exclude_unset=True))
        except ValidationError as exc:
            raise ValueError(f"not a size: {exc.errors()[0]['msg']}") from None
    if key.startswith("params."):
        return canonical_json({key[len("params."):]: value})
    return canonical_json({key: value})


def _shown(key: str, patch_json: str) -> str:
    """An axis value, from its patch's JSON, as a suite would write it."""
    import json

    if key == "size":
        return patch_json
    value = json.loads(patch_json)[key[len("params."):] if key.startswith("params.") else key]
    return value if isinstance(value, str) else canonical_json(value)


def _ref_text(ref: dict[str, Any]) -> str:
    inner = ", ".join(f"{k}: {v if isinstance(v, str) else canonical_json(v)}" for k, v in ref.items())
    return "{" + inner + "}"


def _entry_refs(suite: Suite, i: int, entry: TaskEntry) -> list[tuple[tuple, dict[str, Any]]]:
    """(location, reference) of every reference that entry i may see: its params and the
    `params.<name>` axis values (the suite's and its own) of its parameters."""
    fields = set(TASKS.get(entry.name).Params.model_fields)
    out: list[tuple[tuple, dict[str, Any]]] = []
    single = len(suite.task) == 1
    for k, v in entry.params.items():
        if _is_ref(v):
            out.append((("task", i, "params", k), v))
    if single:
        out += [(("params", k), v) for k, v in suite.params.items() if _is_ref(v) and k not in entry.params]
    for where, axes in ((("axes",), suite.axes), (("task", i, "axes"), entry.axes)):
        for k, values in (axes.params or {}).items():
            if k in fields:
                out += [((*where, f"params.{k}", j), v) for j, v in enumerate(values) if _is_ref(v)]
    return out


def _check_references(suite: Suite) -> list[str]:
    """Every reference names a task of this suite that saves a checkpoint, selects only axes of
    that task (by values it has), and no task depends on itself, directly or through others."""
    errors: list[str] = []
    names = [e.name for e in suite.task]
    producers = _producer_tasks()
    edges: dict[int, set[int]] = {i: set() for i in range(len(suite.task))}
    for i, entry in enumerate(suite.task):
        for loc, ref in _entry_refs(suite, i, entry):
            where = _fmt_loc(loc)
            src = ref.get(REF_FROM)
            if not isinstance(src, str):
                errors.append(f"{where}: a reference is {{from: <task>}}, naming a task of this suite; got {_ref_text(ref)}")
                continue
            if src not in names:
                errors.append(
                    f"{where}: {_ref_text(ref)} names no task of this suite.{_hint(src, names)} "
                    f"Tasks of this suite: {', '.join(dict.fromkeys(names))}"
                    + ("" if src in TASKS.names() else f" (and {src!r} is not a registered task)")
                )
                continue
            if not getattr(TASKS.get(src), "saves_checkpoint", False):
                errors.append(
                    f"{where}: task {src!r} saves no checkpoint, so nothing can come from it. "
                    f"Tasks that do: {', '.join(producers) or 'none'}"
                )
                continue
            targets = [j for j, n in enumerate(names) if n == src]
            edges[i].update(targets)
            axes = list(dict.fromkeys(k for j in targets for k in _entry_axes(suite, suite.task[j])))
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
                        f"{_hint(key, axes)} Its axes: {', '.join(axes) or 'none'}"
                    )
                    continue
                try:
                    want = _selector_json(suite, key, val)
                except ValueError as exc:
                    errors.append(f"{where}.{key}: {exc}")
                    continue
                have = list(dict.fromkeys(
                    canonical_json(patch) for j in targets
                    for _, patch in _axis_options(suite, suite.task[j]).get(key, [])
                ))
                if want not in have:
                    errors.append(
                        f"{where}.{key}: task {src!r} has no cell with {key}={_shown(key, want)}; "
                        f"its values: {', '.join(_shown(key, h) for h in have)}"
                    )
    for cycle in _cycles(edges):
        path = " -> ".join(f"task[{j}] ({names[j]})" for j in cycle + cycle[:1])
        errors.append(
            f"task[{cycle[0]}]: a cycle of references: {path}. A task cannot consume its own checkpoint, "
            f"directly or through others; remove one of the references"
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


def _entry_order(suite: Suite) -> list[int]:
    """Task entries, producers before their consumers (written order otherwise)."""
    names = [e.name for e in suite.task]
    deps = {i: {j for _, ref in _entry_refs(suite, i, e) for j, n in enumerate(names) if n == ref.get(REF_FROM)} - {i}
            for i, e in enumerate(suite.task)}
    order: list[int] = []
    while len(order) < len(deps):
        ready = [i for i in deps if i not in order and deps[i] <= set(order)]
        order.append(ready[0] if ready else min(i for i in deps if i not in order))  # a cycle: already an error
    return order


# ---------------------------------------------------------------------------------------------
# Loading and finding suites


def load_suite(path: Union[str, Path]) -> Suite:
    """Read and validate a suite file; raise SuiteError with every problem found."""
    path = Path(path)
    return _validate(read_yaml(path), path)


def suite_dirs() -> list[Path]:
    """Where bare suite names are looked up: ./suites, then the checkout's suites/."""
    here = Path.cwd() / "suites"
    repo = Path(__file__).resolve().parents[2] / "suites"
    return [here] + ([repo] if repo.resolve() != here.resolve() else [])


def find_suite(name_or_path: Union[str, Path]) -> Path:
    """A suite path, or a bare name (`quickstart`) looked up in suites/."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    names: list[str] = []
    for d in suite_dirs():
        for cand in (d / f"{p.name}.yaml", d / f"{p.name}.yml", d / p.name):
            if cand.is_file() and p.parent == Path("."):
                return cand
        if d.is_dir():
            names += sorted(f.stem for f in d.glob("*.y*ml"))
    raise SuiteError(
        f"no suite {str(name_or_path)!r}: not a file, and not a name in {', '.join(map(str, suite_dirs()))}."
        f"{_hint(p.stem, names)} Available: {', '.join(dict.fromkeys(names)) or 'none'}"
    )


# ---------------------------------------------------------------------------------------------
# Expansion


def _order(raw_axes: Any) -> list[str]:
    """Axis keys in the order written, `params.<name>` spelled out."""
    order: list[str] = []
    for key, val in (raw_axes if isinstance(raw_axes, dict) else {}).items():
        if key == "params" and isinstance(val, dict):
            order += [f"params.{k}" for k in val]
        else:
            order.append(key)
    return order


def _axis_options(suite: Suite, entry: Optional[TaskEntry] = None) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per axis key, its values as patches: ("model" | "run" | "params", {key: value}). A task
    entry's own axes replace the suite's axes of the same key (in place) and add the others at
    the end."""
    options = {key: _values_of(suite.axes, key) for key in suite.axes_order}
    if entry is not None:
        options.update({key: _values_of(entry.axes, key) for key in entry._axes_order})
    return options


def _values_of(axes: Any, key: str) -> list[tuple[str, dict[str, Any]]]:
    if key == "size":
        return [("model", s.model_dump(exclude_unset=True)) for s in axes.size]
    if key.startswith("params."):
        name = key[len("params."):]
        return [("params", {name: v}) for v in axes.params[name]]
    kind = "run" if key in RUN_DEFAULTS else "model"
    return [(kind, {key: v}) for v in getattr(axes, key)]


def resolve_model(model: dict[str, Any]) -> dict[str, Any]:
    """Fill in and canonicalise a model dict; raise ValueError if it cannot be built.

    The layout is stored under its canonical name ("LLLA" at depth 4 becomes "3:1"). A model with
    no linear layer is a Transformer whatever the variant, so its variant becomes "attention"
    (and its mixer_kwargs, which only the linear variant reads, are dropped): the Transformer
    baseline is then one cell, not one per variant. Variant "attention" likewise means every
    layer is softmax attention (as HybridLM builds it), so its layout becomes "transformer".
    """
    model = {**ModelConfig().to_dict(), **model}
    kinds = resolve_layout(model["layout"], model["n_layers"])
    if model["variant"] == "attention":
        kinds = [ATTN] * len(kinds)
    if LINEAR not in kinds:
        model["variant"] = "attention"
        model["mixer_kwargs"] = {}
    model["layout"] = layout_name(kinds)
    _check_mixers(canonical_json({k: v for k, v in model.items() if k not in ("n_layers", "layout")}), tuple(set(kinds)))
    return model


@lru_cache(maxsize=1024)
def _check_mixers(model_json: str, kinds: tuple[str, ...]) -> None:
    """Build one mixer of each kind on the meta device: catches head counts that do not
    divide, mixer_kwargs the variant rejects, and the like, without allocating anything."""
    import json

    try:
        import torch

        from harness.model.lm import build_mixer
    except ImportError:  # model code unavailable: leave it to run time
        return
    cfg = ModelConfig.from_dict({**json.loads(model_json), "n_layers": 1, "layout": "pure"})
    for kind in kinds:
        try:
            with torch.device("meta"):
                build_mixer(cfg, kind, 0)
        except Exception as exc:
            what = "softmax attention" if kind == ATTN else f"variant {cfg.variant!r}"
            raise ValueError(f"cannot build {what} with this config: {exc}") from None


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


#: a task entry's expanded combinations: (axis key -> canonical JSON of its patch, the cell or
#: None when the combination is impossible)
_Produced = list[tuple[dict[str, str], Optional[Cell]]]


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
    produced: dict[int, _Produced] = {}
    invalid: dict[str, list[str]] = {}
    unresolved: dict[str, list[str]] = {}
    n_combos = 0
    cuda: Optional[bool] = None
    for i in _entry_order(suite):
        entry = suite.task[i]
        task_cls = TASKS.get(entry.name)
        task = task_cls()
        options = _axis_options(suite, entry)
        keys = list(options)
        base_model = {**suite_model, **entry.model.model_dump(exclude_unset=True)}
        axes_order = _entry_axes(suite, entry)
        fields = set(task_cls.Params.model_fields)
        out, rec = per_entry.setdefault(i, []), produced.setdefault(i, [])
        for combo in itertools.product(*options.values()):
            n_combos += 1
            values = {k: canonical_json(patch) for k, (_, patch) in zip(keys, combo)}
            model, run, params = dict(base_model), dict(RUN_DEFAULTS), _base_params(suite, entry)
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
            for name, ref in _refs(params).items():
                found, kind, msg = _match_producer(suite, ref, values, produced)
                if found is not None:
                    inputs[name] = found
                    continue
                blocked = True
                text = f"params.{name} {_ref_text(ref)}: {msg}"
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
        lines = []
        for msg, combos in invalid.items():
            more = f" (and {len(combos) - 1} more like it)" if len(combos) > 1 else ""
            lines.append(f"  - {combos[0]}{more}:\n      {msg}")
        problems.append(
            f"{where}: {n_invalid} impossible combination{'s' if n_invalid > 1 else ''} of axis values:\n"
            + "\n".join(lines)
            + "\n  Fix the axes, or set `skip_invalid: true` to drop such combinations."
        )
    if unresolved:
        n = sum(map(len, unresolved.values()))
        lines = []
        for msg, combos in unresolved.items():
            more = f" (and {len(combos) - 1} more like it)" if len(combos) > 1 else ""
            lines.append(f"  - {combos[0]}{more}:\n      {msg}")
        problems.append(
            f"{where}: {n} cell{'s' if n > 1 else ''} whose reference to another task's checkpoint "
            f"matches no cell or several:\n" + "\n".join(lines)
        )
    if invalid and suite.skip_invalid and not any(per_entry.values()):
        lines = [f"  - {combos[0]}" + (f" (and {len(combos) - 1} more like it)" if len(combos) > 1 else "")
                 + f":\n      {msg}" for msg, combos in invalid.items()]
        problems.append(
            f"{where}: every combination of axis values is impossible ({n_invalid}), so `skip_invalid: true` "
            f"leaves no cell to run:\n" + "\n".join(lines) + "\n  Fix the axes so that some combination is possible."
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


def _match_producer(
    suite: Suite, ref: dict[str, Any], values: dict[str, str], produced: dict[int, _Produced]
) -> tuple[Optional[Cell], str, str]:
    """The one cell a consumer's reference names: a cell of task `ref["from"]` with the
    consumer's value on every axis both have, and the reference's own value on each axis it
    selects. Returns (cell, "", "") or (None, "invalid" | "error", why)."""
    src = str(ref[REF_FROM])
    selectors = {k: _selector_json(suite, k, v) for k, v in ref.items() if k != REF_FROM}
    cands: list[tuple[dict[str, str], Optional[Cell]]] = []
    wanted: dict[str, str] = {}
    for j, entry in enumerate(suite.task):
        if entry.name != src or j not in produced:
            continue
        target = {k: values[k] for k in _axis_options(suite, entry) if k in values}
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
                example = _shown(key, have[0]) if have else "..."
                return None, "error", (
                    f"task {src!r} has no cell with {key}={_shown(key, want)} (its values: "
                    f"{', '.join(_shown(key, h) for h in have)}). Give both tasks the same {key} values "
                    f"(one suite-level axis), or select the cell in the reference, e.g. "
                    f"{{from: {src}, {key}: {example}}}"
                )
        return None, "error", f"task {src!r} has no cell with these axis values"
    rows = [pv for pv, _ in valid.values()]
    differ = [k for k in dict.fromkeys(k for pv in rows for k in pv) if len({pv.get(k) for pv in rows}) > 1]
    key = differ[0] if differ else "?"
    shown = "; ".join(f"{k}: {', '.join(dict.fromkeys(_shown(k, pv[k]) for pv in rows if k in pv))}" for k in differ)
    example = _shown(key, rows[0][key]) if differ else "..."
    return None, "error", (
        f"matches {len(valid)} cells of task {src!r}, which differ in {shown}. Select one in the "
        f"reference, e.g. {{from: {src}, {key}: {example}}}, or make {key} an axis of the suite "
        f"(shared by both tasks) so that each consuming cell has its own"
    )


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False
