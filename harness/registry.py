"""Registries for variants (token mixers) and tasks.

A registry maps a short name to a class. Classes register with a decorator
(`@register_variant("gla")`); third-party packages register through an entry-point group
(`harness.variants` / `harness.tasks`), whose target is either the class itself or a module that
registers on import. Built-in variants live in the repository's `variants/` folder, installed as
`harness.variants` (never a top-level `variants` package, which a folder of that name in the
working directory would shadow), and built-in tasks in `harness.tasks`; both are imported lazily
on first lookup.

What registers is checked: a variant must subclass `harness.model.mixer.Mixer`, a task
`harness.tasks.base.Task` (the registry's `base`), else registering raises TypeError.

Listing does not import: `names()` and `describe(name)` read the built-in modules' and the entry
points' source (the decorator's name, the class's literal attributes such as `display_name` and
`color`), so suite validation and reports know every variant without importing torch.
"""
from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

from harness._lazy import import_package, package_dir

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists what is."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtin_packages: tuple[str, ...], base: str = "",
                 decorator: str = ""):
        self.kind = kind
        self.group = group
        self.builtin_packages = builtin_packages
        self.base = base  # "module:Class" every registered class must subclass ("" = anything)
        self.decorator = decorator  # the decorator's name, for reading sources without importing
        self._items: dict[str, type[T]] = {}
        self._loaded = False

    def _base_class(self) -> type | None:
        if not self.base:
            return None
        module, _, name = self.base.partition(":")
        return getattr(importlib.import_module(module), name)

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            base = self._base_class()
            if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"cannot register {_qualname(cls) if isinstance(cls, type) else cls!r} as {self.kind} "
                                f"{name!r}: a {self.kind} must subclass {base.__module__}.{base.__qualname__}")
            existing = self._items.get(name)
            if existing is not None and existing is not cls and _qualname(existing) != _qualname(cls):
                raise ValueError(
                    f"{self.kind} name {name!r} is already registered by {_qualname(existing)}; "
                    f"cannot register {_qualname(cls)} under the same name"
                )
            cls.name = name  # type: ignore[attr-defined]
            self._items[name] = cls
            return cls

        return decorator

    def load(self) -> None:
        """Import built-in modules and entry points once."""
        if self._loaded:
            return
        self._loaded = True
        for package in self.builtin_packages:
            pkg = import_package(package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package}.{info.name}")
        for ep in entry_points(group=self.group):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plug-in must not break the whole tool
                import warnings

                warnings.warn(f"could not load {self.kind} entry point {ep.name!r} ({ep.value}): {exc}", stacklevel=2)
                continue
            if isinstance(obj, type) and obj not in self._items.values():
                self.register(ep.name)(obj)

    def get(self, name: str) -> type[T]:
        self.load()
        try:
            return self._items[name]
        except KeyError:
            names = self.names()
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Registered {self.kind}s: {', '.join(names)}"
            ) from None

    def names(self) -> list[str]:
        """Every name, without importing anything: the built-ins' and the entry points' sources,
        and whatever registered at run time."""
        static = {n for _, n, _ in self._sources()}
        return sorted(static | set(self._items))

    def describe(self, name: str) -> dict[str, Any]:
        """The class's own literal attributes (display_name, color, generation, ...), read from its
        source without importing it (from the class itself once it is imported); {} if unknown."""
        cls = self._items.get(name)
        if cls is not None:
            return {k: v for k, v in vars(cls).items() if not k.startswith("_") and _literal(v)}
        for path, n, cls_name in self._sources():
            if n == name:
                return dict(_class_literals(str(path), cls_name))
        return {}

    def items(self) -> list[tuple[str, type[T]]]:
        self.load()
        return [(n, self._items[n]) for n in sorted(self._items)]

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def _sources(self) -> list[tuple[Path, str, str]]:
        """(file, registered name, class name) of the built-ins and the entry points."""
        out: list[tuple[Path, str, str]] = []
        for package in self.builtin_packages:
            folder = package_dir(package)
            for path in sorted(folder.glob("[!_]*.py")) if folder else []:
                out += [(path, n, c) for n, c in _registrations(str(path), self.decorator)]
        for ep in entry_points(group=self.group):
            module, _, attr = ep.value.partition(":")
            path = _module_file(module)
            if path is not None and attr:
                out.append((path, ep.name, attr.split(".")[-1]))
            else:
                out.append((Path(), ep.name, ""))
        return out


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _literal(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _module_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


@lru_cache(maxsize=256)
def _parse(path: str) -> ast.Module | None:
    try:
        return ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _registrations(path: str, decorator: str) -> list[tuple[str, str]]:
    """(name, class name) of each `@<decorator>("name")` class in the file."""
    tree = _parse(path)
    out = []
    for node in tree.body if tree else []:
        if not isinstance(node, ast.ClassDef):
            continue
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call) and dec.args and isinstance(dec.args[0], ast.Constant):
                func = dec.func
                fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if fname == decorator:
                    out.append((str(dec.args[0].value), node.name))
    return out


def _class_literals(path: str, cls_name: str) -> dict[str, Any]:
    """The literal class attributes (`display_name = "..."`) of class `cls_name` in the file."""
    tree = _parse(path)
    for node in tree.body if tree else []:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            out = {}
            for stmt in node.body:
                pairs: list[tuple[Any, Any]] = []
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    target, value = stmt.targets[0], stmt.value
                    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):  # a, b = 1, 2
                        pairs = list(zip(target.elts, value.elts))
                    else:
                        pairs = [(target, value)]
                elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                    pairs = [(stmt.target, stmt.value)]
                for target, value in pairs:
                    if not isinstance(target, ast.Name):
                        continue
                    try:
                        lit = ast.literal_eval(value)
                    except (ValueError, SyntaxError):
                        continue
                    if _literal(lit):
                        out[target.id] = lit
            return out
    return {}


VARIANTS: Registry = Registry("variant", "harness.variants", ("harness.variants",), base="harness.model.mixer:Mixer",
                              decorator="register_variant")
TASKS: Registry = Registry("task", "harness.tasks", ("harness.tasks",), base="harness.tasks.base:Task",
                           decorator="register_task")

register_variant = VARIANTS.register
register_task = TASKS.register


def get_variant(name: str):
    return VARIANTS.get(name)

