"""No function longer than a screen (issue 22): every function and method in harness/ and
variants/, nested ones included, is at most MAX_LINES lines.

Read statically (ast). A function's length is `end_lineno - lineno + 1` of its `def` node: from
the `def` line (decorators not counted) to its last line, docstring, comments and blank lines
inside it included. A function that outgrows the limit is split into named steps, not excused.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("harness", "variants")
MAX_LINES = 60


def long_functions(root: Path = ROOT, folders: tuple[str, ...] = FOLDERS,
                   limit: int = MAX_LINES) -> list[str]:
    """'path:line name (N lines)' for every function or method longer than `limit`."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > limit:
                        found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_longer_than_a_screen():
    found = long_functions()
    assert not found, (f"functions longer than {MAX_LINES} lines (split them into named steps):\n"
                       + "\n".join(found))


def statements(n: int, indent: int) -> str:
    return "".join(" " * indent + f"x{i} = {i}\n" for i in range(n))


def test_the_check_can_fail(tmp_path):
    """A seeded long method, long nested function and long async function are each named (the
    outer function too, since it contains the long one); a function of exactly the limit is not."""
    (tmp_path / "harness" / "sub").mkdir(parents=True)
    (tmp_path / "variants").mkdir()
    (tmp_path / "harness" / "sub" / "m.py").write_text(
        "class A:\n    def long(self):\n" + statements(MAX_LINES, 8)
        + "\n\ndef at_limit():\n" + statements(MAX_LINES - 1, 4))
    (tmp_path / "variants" / "v.py").write_text(
        "def outer():\n    def inner():\n" + statements(MAX_LINES, 8) + "    return inner\n"
        + "\n\nasync def run():\n" + statements(MAX_LINES, 4))
    assert sorted(long_functions(tmp_path)) == [
        f"harness/sub/m.py:2 long ({MAX_LINES + 1} lines)",
        f"variants/v.py:1 outer ({MAX_LINES + 3} lines)",
        f"variants/v.py:2 inner ({MAX_LINES + 1} lines)",
        f"variants/v.py:{MAX_LINES + 6} run ({MAX_LINES + 1} lines)",
    ]


MAX_MODULE_LINES = 400


def long_modules(root: Path = ROOT, folders: tuple[str, ...] = FOLDERS, limit: int = MAX_MODULE_LINES) -> list[str]:
    """'path (N lines)' for every module of `folders` longer than `limit` lines."""
    return [f"{p.relative_to(root)} ({n} lines)" for folder in folders for p in sorted((root / folder).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > limit]


def test_no_module_longer_than_a_sitting():
    """One job per module, small enough to read in one sitting (issue 22: every module <= 400 lines)."""
    found = long_modules()
    assert not found, f"modules over {MAX_MODULE_LINES} lines (split by job):\n" + "\n".join(found)


def test_the_module_check_can_fail(tmp_path):
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (tmp_path / "harness" / "small.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    assert long_modules(tmp_path, ("harness",)) == [f"harness/big.py ({MAX_MODULE_LINES + 1} lines)"]
