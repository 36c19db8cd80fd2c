"""The suite files' YAML dialect: safe YAML with no sexagesimal ints and no repeated keys, for
suite files (`read_yaml`) and the command line's override values (`parse_yaml_value`) alike."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from harness.sweep.messages import SuiteError

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
