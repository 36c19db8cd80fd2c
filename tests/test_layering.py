"""The import contract (docs/architecture.md): layers import downward only, and nothing loops.

Read statically (ast), counting every import: module level, inside functions and under
TYPE_CHECKING alike, since each is a dependency a reader must follow.
- no import cycle among harness/'s modules (a package's __init__ is its own module; importing
  a.b.c is an edge to a.b.c only, not to the packages it runs on the way);
- model/ and ops/ import nothing from sweep/, report/, tasks/, integrations/ or the CLI;
- report/ never imports torch (a report builds on a machine without it).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"harness": "harness", "variants": "harness.variants"}
#: layer -> what it must never import
FORBIDDEN = {
    "harness.model": ("harness.sweep", "harness.report", "harness.tasks", "harness.integrations", "harness.cli"),
    "harness.ops": ("harness.sweep", "harness.report", "harness.tasks", "harness.integrations", "harness.cli",
                    "harness.model"),
}


def module_name(path: Path, folder: Path, package: str) -> str:
    parts = [package, *path.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str) -> list[tuple[str, int]]:
    """(absolute target, line) of every import in the file."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out += [(base, node.lineno)] + [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return out


def import_graph(root: Path = ROOT, packages: dict[str, str] = PACKAGES) -> dict[str, dict[str, int]]:
    """module -> {first-party module it imports: line}."""
    files = {module_name(p, root / f, pkg): p for f, pkg in packages.items() for p in (root / f).rglob("*.py")}
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges = graph.setdefault(module, {})
        for target, line in imports_of(path, module):
            while target and target not in files:  # `from pkg import name`: name may be a function
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                edges.setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    edges = [f"{a} -> {b} (line {graph[a][b]})" for a in component for b in graph[a] if b in component]
    return "; ".join(edges)


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(c, graph) for c in found)


def test_model_and_ops_import_only_downward():
    bad = [f"{m} imports {t} (line {line})" for m, edges in import_graph().items()
           for layer, banned in FORBIDDEN.items() if m == layer or m.startswith(layer + ".")
           for t, line in edges.items() if any(t == b or t.startswith(b + ".") for b in banned)]
    assert not bad, "\n".join(bad)


def test_report_never_imports_torch():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {t}" for p in (ROOT / "harness" / "report").rglob("*.py")
           for t, line in imports_of(p, module_name(p, ROOT / "harness", "harness")) if t.split(".")[0] == "torch"]
    assert not bad, "\n".join(bad)


def test_the_checks_can_fail(tmp_path):
    """A seeded loop and a seeded upward import are found."""
    pkg = tmp_path / "harness"
    for sub in ("model", "sweep"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "a.py").write_text("from harness.model import b\n")
    (pkg / "model" / "b.py").write_text("def f():\n    from harness.model.a import x\n"
                                        "    from harness.sweep import c\n")
    (pkg / "sweep" / "c.py").write_text("")
    graph = import_graph(tmp_path, {"harness": "harness"})
    assert cycles(graph) == [["harness.model.a", "harness.model.b"]]
    assert "harness.sweep.c" in graph["harness.model.b"]
