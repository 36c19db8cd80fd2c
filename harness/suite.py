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

from harness.cell import BACKENDS, DTYPE_NAMES, RUN_DEFAULTS, Cell, canonical_json
from harness.config import ModelConfig
from harness.layout import ATTN, LINEAR, layout_name, resolve_layout
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


VariantName = Annotated[str, AfterValidator(_check_variant)]
TaskName = Annotated[str, AfterValidator(_check_task)]
PositiveInt = Annotated[int, Field(gt=0)]
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
    "seed": Annotated[int, Field(ge=0)],
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

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
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
    got = err.get("input")
    return f"{where}: {msg} (got {got!r})"


def _import_task_modules(names: list[str], extra_paths: tuple[str, ...] = ()) -> None:
    """Import modules that register extra tasks. The working directory is searched too (as
    `python -m` does), so a suite can name e.g. `tests.helpers_tasks` when run from a checkout."""
    for p in (*extra_paths, os.getcwd()):
        if p not in sys.path:
            sys.path.append(p)
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
        base = _base_params(suite, entry)
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
                    params_cls.model_validate({**_base_params(suite, entry), key: val})
                except ValidationError as exc:
                    errors += [
                        _describe({**e, "loc": e["loc"][1:]}, params_cls, ("axes", f"params.{key}", j))
                        for e in exc.errors()
                        if e["loc"][:1] == (key,)
                    ]
    return errors


def _base_params(suite: Suite, entry: TaskEntry) -> dict[str, Any]:
    return {**suite.params, **entry.params} if len(suite.task) == 1 else dict(entry.params)


# ---------------------------------------------------------------------------------------------
# Loading and finding suites


def load_suite(path: Union[str, Path]) -> Suite:
    """Read and validate a suite file; raise SuiteError with every problem found."""
    path = Path(path)
    return _validate(read_yaml(path), path)


def suite_dirs() -> list[Path]:
    """Where bare suite names are looked up: ./suites, then the checkout's suites/."""
    here = Path.cwd() / "suites"
    repo = Path(__file__).resolve().parent.parent / "suites"
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


def _axis_options(suite: Suite, entry: Optional[TaskEntry] = None) -> list[list[tuple[str, dict[str, Any]]]]:
    """Per axis, its values as patches: ("model" | "run" | "params", {key: value}). A task entry's
    own axes replace the suite's axes of the same key (in place) and add the others at the end."""
    options = {key: _values_of(suite.axes, key) for key in suite.axes_order}
    if entry is not None:
        options.update({key: _values_of(entry.axes, key) for key in entry._axes_order})
    return list(options.values())


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

        from harness.model import build_mixer
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


def expand_cells(suite: Suite, notes: Optional[list[str]] = None) -> list[Cell]:
    """The suite's cells, in axis order (tasks outermost), duplicates merged.

    Raises SuiteError naming every impossible combination, unless the suite sets
    `skip_invalid: true`: then they are dropped and a note is appended to `notes`.
    """
    where = str(suite.source) if suite.source else suite.name
    notes = notes if notes is not None else []
    suite_model = suite.model.model_dump(exclude_unset=True)
    cells: dict[str, Cell] = {}
    invalid: dict[str, list[str]] = {}
    n_combos = 0
    cuda: Optional[bool] = None
    for entry in suite.task:
        task_cls = TASKS.get(entry.name)
        task = task_cls()
        options = _axis_options(suite, entry)
        base_model = {**suite_model, **entry.model.model_dump(exclude_unset=True)}
        axes_order = list(dict.fromkeys(suite.axes_order + entry._axes_order))
        fields = set(task_cls.Params.model_fields)
        for combo in itertools.product(*options):
            n_combos += 1
            model, run, params = dict(base_model), dict(RUN_DEFAULTS), _base_params(suite, entry)
            for kind, patch in combo:
                if kind == "model":
                    model.update(copy.deepcopy(patch))
                elif kind == "run":
                    run.update(patch)
                elif set(patch) <= fields:  # a parameter axis of another task: not ours
                    params.update(patch)
            full_model = {**ModelConfig().to_dict(), **model}
            try:
                resolved_params = task_cls.Params.model_validate(params).model_dump(mode="json")
                imposed = task_cls.model_from_params(resolved_params)  # e.g. a checkpoint's own shape
                if imposed:
                    full_model = {**full_model, **imposed}
                full_model = resolve_model(full_model)
            except (ValueError, TypeError) as exc:
                msg = str(exc)
                invalid.setdefault(msg, []).append(_describe_combo(entry.name, full_model, run, params, axes_order))
                continue
            if run["device"] == "auto":
                if cuda is None:
                    cuda = _cuda_available()
                run["device"] = "cuda" if cuda else "cpu"
            cell = Cell(
                suite=suite.name,
                task=entry.name,
                params=resolved_params,
                model=full_model,
                task_modules=tuple(suite.task_modules),
                **run,
            )
            try:
                task.check(cell)
            except ValueError as exc:
                invalid.setdefault(f"task {entry.name!r}: {exc}", []).append(
                    _describe_combo(entry.name, full_model, run, params, axes_order)
                )
                continue
            cells.setdefault(cell.cell_id, cell)
    n_invalid = sum(map(len, invalid.values()))
    if invalid and not suite.skip_invalid:
        lines = []
        for msg, combos in invalid.items():
            more = f" (and {len(combos) - 1} more like it)" if len(combos) > 1 else ""
            lines.append(f"  - {combos[0]}{more}:\n      {msg}")
        raise SuiteError(
            f"{where}: {n_invalid} impossible combination{'s' if n_invalid > 1 else ''} of axis values:\n"
            + "\n".join(lines)
            + "\n  Fix the axes, or set `skip_invalid: true` to drop such combinations."
        )
    if invalid:
        notes.append(f"{where}: skipped {n_invalid} impossible combination(s) (skip_invalid: true):")
        notes += [f"  {len(c)} x {msg.splitlines()[0]}" for msg, c in invalid.items()]
    merged = n_combos - n_invalid - len(cells)
    if merged:
        notes.append(
            f"{where}: merged {merged} duplicate combination(s) into existing cells "
            f"(e.g. Transformer cells do not depend on the variant)"
        )
    return list(cells.values())


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False
