"""How an invalid suite is reported: every problem at once, each with where it is (file, key
path), what is wrong and, where one is close, a suggestion."""
from __future__ import annotations

import difflib
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel


class SuiteError(ValueError):
    """An invalid suite. The message names the file, every bad key and a suggestion."""


def hint(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(name), choices, n=2, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""



def fmt_loc(loc: tuple) -> str:
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
        allowed = getattr(tp, "allowed_keys", None)  # Axes spells `params` out as params.<name>
        return allowed() if allowed is not None else list(tp.model_fields)
    return []


def describe_error(err: dict, root: type[BaseModel], prefix: tuple = ()) -> str:
    loc = prefix + tuple(err["loc"])
    where = fmt_loc(loc)
    if err["type"] == "extra_forbidden":
        key = loc[-1]
        allowed = _allowed_keys(root, tuple(err["loc"][:-1]))
        suggestion = hint(str(key), allowed)
        return (f"{where}: unknown key {key!r}.{suggestion}"
                + (f" Allowed here: {', '.join(allowed)}" if allowed else ""))
    if err["type"] == "missing":
        return f"{where}: required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        return f"{where}: {msg[len('Value error, '):]}"
    got = repr(err.get("input"))
    return f"{where}: {msg} (got {got if len(got) <= 120 else got[:117] + '...'})"



def error_text(where: str, errors: list[str]) -> str:
    lines = "\n".join(f"  - {e}" for e in errors)
    return f"{where}: invalid suite ({len(errors)} problem{'s' if len(errors) > 1 else ''}):\n{lines}"
