"""Registries for variants (token mixers) and tasks.

A registry maps a short name to a class. Classes register with a decorator
(`@register_variant("gla")`); third-party packages register through an entry-point group
(`harness.variants` / `harness.tasks`), whose target is either the class itself or a module that
registers on import. Built-in variants live in the top-level `variants` package and built-in tasks
in `harness.tasks`; both are imported lazily on first lookup.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists what is."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtin_packages: tuple[str, ...]):
        self.kind = kind
        self.group = group
        self.builtin_packages = builtin_packages
        self._items: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
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
            pkg = importlib.import_module(package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package}.{info.name}")
        for ep in entry_points(group=self.group):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plug-in must not break the whole tool
                import warnings

                warnings.warn(f"could not load {self.kind} entry point {ep.name!r} ({ep.value}): {exc}")
                continue
            if isinstance(obj, type) and obj not in self._items.values():
                self.register(ep.name)(obj)

    def get(self, name: str) -> type[T]:
        self.load()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Registered {self.kind}s: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        self.load()
        return sorted(self._items)

    def items(self) -> list[tuple[str, type[T]]]:
        return [(n, self._items[n]) for n in self.names()]

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._items


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


VARIANTS: Registry = Registry("variant", "harness.variants", ("variants",))
TASKS: Registry = Registry("task", "harness.tasks", ("harness.tasks",))

register_variant = VARIANTS.register
register_task = TASKS.register


def get_variant(name: str):
    return VARIANTS.get(name)


def get_task(name: str):
    return TASKS.get(name)
