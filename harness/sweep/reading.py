"""Reading suite files: safe YAML (no sexagesimal ints, no repeated keys) and finding a suite
by path or by name."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from harness._lazy import package_dir
from harness.sweep.messages import SuiteError, hint
from harness.sweep.schema import Suite

__all__ = ["read_yaml", "load_suite", "find_suite", "suite_dirs", "list_suites"]

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


def parse_yaml_value(text: str) -> Any:
    """One value as a suite would read it (a command-line override's VALUE). Raises ValueError."""
    try:
        return yaml.load(text, Loader=_SuiteLoader)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).replace("\n", " ")) from None


def load_suite(path: Union[str, Path], sets: Sequence[str] = (), device: Optional[str] = None,
               dtype: Optional[str] = None) -> Suite:
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
        f"{hint(p.stem, names)} Available: {', '.join(dict.fromkeys(names)) or 'none'}"
    )
