"""Finding a suite by path or by name, and loading it: read (harness.sweep.yaml_dialect), apply
the command line's overrides, validate."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness._lazy import package_dir
from harness.sweep.messages import SuiteError, hint
from harness.sweep.schema import Suite
from harness.sweep.yaml_dialect import read_yaml

__all__ = ["read_yaml", "load_suite", "find_suite", "suite_dirs", "list_suites"]

def load_suite(path: str | Path, sets: Sequence[str] = (), device: str | None = None,
               dtype: str | None = None) -> Suite:
    """Read and validate a suite file, with command-line overrides (harness.sweep.overrides)
    applied first; raise SuiteError with every problem found."""
    from harness.sweep.overrides import apply_overrides
    from harness.sweep.validate import validate

    path = Path(path)
    return validate(apply_overrides(read_yaml(path), sets, device, dtype), path)


def suite_dirs() -> list[Path]:
    """Where bare suite names are looked up: ./suites (your own, which win), then the suites that
    ship with the harness (the installed package `harness.suites`; a checkout's suites/)."""
    here = Path.cwd() / "suites"
    shipped = package_dir("harness.suites")
    return [here] + ([shipped] if shipped is not None and shipped.resolve() != here.resolve() else [])


def list_suites() -> list[tuple[str, Path, bool]]:
    """(name, file, shipped) of every suite findable by name: ./suites first, then the shipped ones
    that no local suite of the same name shadows."""
    out: dict[str, tuple[str, Path, bool]] = {}
    shipped = package_dir("harness.suites")
    for d in suite_dirs():
        for f in sorted(d.glob("*.y*ml")) if d.is_dir() else []:
            out.setdefault(f.stem, (f.stem, f, shipped is not None and d.resolve() == shipped.resolve()))
    return list(out.values())


def find_suite(name_or_path: str | Path) -> Path:
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
        f"{hint(p.stem, names)} Available: {', '.join(dict.fromkeys(names)) or 'none'}"
    )
