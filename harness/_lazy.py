"""Import helpers: lazy re-exports, and the packages that live outside harness/ in a checkout.

Lazy re-exports: a package lists `name -> module`, and the name is imported on first use, so
importing the package stays cheap (no torch for harness.model.config users, no pandas for
`import harness`).

`harness.variants` and `harness.suites` are the repository's top-level `variants/` and `suites/`
folders, mapped into the harness namespace when installed (pyproject.toml). From a bare checkout
(not installed, e.g. `python -m harness.cli` in the repository), `import_package` maps them the
same way, so both layouts import the same names.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

#: packages that are top-level folders of the repository: package -> folder name
CHECKOUT_FOLDERS = {"harness.variants": "variants", "harness.suites": "suites"}


def package_dir(name: str) -> Path | None:
    """The folder of package `name` without importing it (a checkout's folder for
    harness.variants / harness.suites when they are not installed), or None."""
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    folder = CHECKOUT_FOLDERS.get(name)
    if folder is not None:
        path = Path(__file__).resolve().parent.parent / folder
        if (path / "__init__.py").is_file():
            return path
    return None


def import_package(name: str) -> ModuleType:
    """import `name`; for harness.variants / harness.suites in a bare checkout, from the folder."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        folder = package_dir(name) if name in CHECKOUT_FOLDERS else None
        if folder is None:
            raise
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


#: the distribution users install, for the messages below
DISTRIBUTION = "hybrid-attention-harness"


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or fail with the pip command that installs it: the base
    install has none of the extras (pyproject.toml's optional-dependencies), and a bare
    ModuleNotFoundError does not tell a user what to install. tests/test_imports_declared.py
    checks that `extra` declares `module`'s distribution."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{purpose} needs {module.split('.')[0]!r}, which the base install lacks: "
                          f"pip install '{DISTRIBUTION}[{extra}]'") from exc


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` serving `exports` (name -> defining module)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
