"""The suite schema: what a suite file may say, strictly typed (pydantic, extra="forbid").

A suite names its tasks, model settings, size presets and axes; `Suite` is the validated form
(`harness.sweep.validate` builds it with every problem reported at once) and `axis_options`
gives each axis's values as patches for the expansion. The format is documented in
docs/suites.md.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from harness.model.config import BLOCKS, ModelConfig
from harness.model.layout import check_placement
from harness.placement_search import DEFAULT_COMPARE
from harness.registry import TASKS, VARIANTS
from harness.runtime.devices import BACKENDS
from harness.sweep.cell import DTYPE_NAMES, RUN_DEFAULTS
from harness.sweep.messages import hint

#: the largest integer a results column holds (Int64): a bigger one is refused here, not when the
#: cell's row is written (which would stop the sweep)
INT64_MAX = 2**63 - 1


def _check_variant(name: str) -> str:
    names = VARIANTS.names()
    if name not in names:
        raise ValueError(f"unknown variant {name!r}.{hint(name, names)} Registered variants: {', '.join(names)}")
    return name


def _check_task(name: str) -> str:
    names = TASKS.names()
    if name not in names:
        raise ValueError(
            f"unknown task {name!r}.{hint(name, names)} Registered tasks: {', '.join(names)} "
            f"(tasks defined outside harness need their module listed under task_modules)"
        )
    return name


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
    if name == "placement":
        return Annotated[str, AfterValidator(check_placement)]
    if name == "block":
        return Literal[BLOCKS]  # type: ignore[valid-type]
    if name == "window":  # sliding-window attention; null = full attention
        return Optional[PositiveInt]  # noqa: UP045 (as below)
    return _MODEL_TYPES[name]


#: ModelConfig fields that may be null (None means "derive it", e.g. attn_heads from n_heads)
NULLABLE_MODEL_FIELDS = [n for n in MODEL_FIELDS if type(None) in typing.get_args(_MODEL_TYPES[n])]
_MODEL_DEFAULTS = ModelConfig().to_dict()


def _no_null(value: Any, info: ValidationInfo) -> Any:
    # A null (`d_model:` with nothing after it, `--set model.d_model=`) would otherwise reach the
    # model builder and fail there with a message about something else (mixer_kwargs)
    if value is None:
        raise ValueError(f"an empty value (null) is not allowed for {info.field_name}; give a value, or leave "
                         f"the key out for the default ({_MODEL_DEFAULTS.get(info.field_name)!r})")
    return value


# Partial ModelConfig: any subset of its fields, strictly typed ("4" is not an int). Fields are
# Optional only so that an unset field reads None; a null written in the suite is refused.
ModelOverrides = create_model(  # type: ignore[call-overload]
    "ModelOverrides",
    __config__=ConfigDict(extra="forbid", strict=True),
    __validators__={"_no_null": field_validator(
        *[n for n in MODEL_FIELDS if n not in NULLABLE_MODEL_FIELDS], mode="before")(_no_null)},
    **{name: (Optional[_model_field_type(name)], None) for name in MODEL_FIELDS},  # noqa: UP045 (types built at run time)
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
    return (Optional[Annotated[list[tp], Field(min_length=1)]], None)  # noqa: UP045 (types built at run time)


class _AxesBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def allowed_keys(cls) -> list[str]:
        """The keys an axes mapping may have, as a suite writes them (for error messages)."""
        return [k for k in cls.model_fields if k != "params"] + ["params.<name>"]

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
                    raise ValueError(f"unknown size preset {item!r}.{hint(item, list(presets))} "
                                     f"Defined presets: {known}")
                item = copy.deepcopy(presets[item])
            out.append(item)
        return out



Axes = create_model(  # type: ignore[call-overload]
    "Axes",
    __base__=_AxesBase,
    **{name: _axis(_model_field_type(name)) for name in MODEL_FIELDS},
    **{name: _axis(tp) for name, tp in _RUN_TYPES.items()},
    size=_axis(ModelOverrides),
    params=(Optional[dict[str, Annotated[list[Any], Field(min_length=1)]]], None),  # noqa: UP045 (types built at run time)
)


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: TaskName
    params: dict[str, Any] = Field(default_factory=dict)
    #: this task's own model settings and axes, over the suite's (same key: the task's wins)
    model: ModelOverrides = Field(default_factory=ModelOverrides)  # type: ignore[valid-type]
    axes: Axes = Field(default_factory=Axes)  # type: ignore[valid-type]

    _axes_order: list[str] = PrivateAttr(default_factory=list)


class PlacementSearch(BaseModel):
    """`placement_search:`: where should k attention layers go (harness.placement_search; the cells
    each round trains: harness.sweep.search; checked there too)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    #: search k = 1 .. attention_layers attention layers
    attention_layers: int
    #: what ranks the candidates (default: the suite's task score, e.g. recall_acc for mqar)
    metric: str | None = None
    #: the fixed placement policies compared at each k the depth allows
    compare: list[str] = Field(default_factory=lambda: list(DEFAULT_COMPARE))


class Suite(BaseModel):
    """A validated suite. Build it with `load_suite` (or `harness.sweep.validate.validate` from a dict), expand it with
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
    placement_search: PlacementSearch | None = None

    _source: Path | None = PrivateAttr(default=None)
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
    def source(self) -> Path | None:
        return self._source

    @property
    def axes_order(self) -> list[str]:
        """Axis keys in the order written (the product's outermost first)."""
        return list(self._axes_order)



def base_params(suite: Suite, entry: TaskEntry) -> dict[str, Any]:
    return {**suite.params, **entry.params} if len(suite.task) == 1 else dict(entry.params)



def axes_order_of(raw_axes: Any) -> list[str]:
    """Axis keys in the order written, `params.<name>` spelled out."""
    order: list[str] = []
    for key, val in (raw_axes if isinstance(raw_axes, dict) else {}).items():
        if key == "params" and isinstance(val, dict):
            order += [f"params.{k}" for k in val]
        else:
            order.append(key)
    return order


def axis_options(suite: Suite, entry: TaskEntry | None = None) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per axis key, its values as patches: ("model" | "run" | "params", {key: value}). A task
    entry's own axes replace the suite's axes of the same key (in place) and add the others at
    the end."""
    options = {key: values_of(suite.axes, key) for key in suite.axes_order}
    if entry is not None:
        options.update({key: values_of(entry.axes, key) for key in entry._axes_order})
    return options


def values_of(axes: Any, key: str) -> list[tuple[str, dict[str, Any]]]:
    if key == "size":
        return [("model", s.model_dump(exclude_unset=True)) for s in axes.size]
    if key.startswith("params."):
        name = key[len("params."):]
        return [("params", {name: v}) for v in axes.params[name]]
    kind = "run" if key in RUN_DEFAULTS else "model"
    return [(kind, {key: v}) for v in getattr(axes, key)]
