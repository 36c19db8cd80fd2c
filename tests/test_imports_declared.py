"""Every third-party import of harness/ and variants/ is declared in pyproject.toml (issue 20).

A base install (`pip install -e .`) has only `[project].dependencies`. An undeclared import that
another package happens to pull in (click through ray and lm-eval, once) passes every test in a
venv with all the extras and fails for a new user. So, read statically (ast):

1. every third-party import maps (importlib.metadata.packages_distributions) to a distribution
   declared in the dependencies or in an extra;
2. a module that the base install imports (reachable through module-level imports from the
   command line, the package, the tasks and the variants) imports at module level only base
   dependencies;
3. an extra's package imported anywhere else is guarded: inside `try: ... except ImportError`,
   through `harness._lazy.import_extra(module, extra, ...)` naming an extra that declares it, or
   in a module that the base install never imports (an extra's own entry, e.g. the lm-eval adapter).
"""
from __future__ import annotations

import ast
import re
import sys
import textwrap
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"harness", "variants"}
#: folders -> the package they install as (pyproject.toml's package-dir)
PACKAGES = {"harness": "harness", "variants": "harness.variants"}
#: what the base install imports first: the command line, the package, every task and variant
ROOT_PATTERNS = (r"harness", r"harness\.cli", r"harness\.tasks\..+", r"harness\.variants\..+")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return canonical(re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0])


def declared(pyproject: Path) -> tuple[set[str], dict[str, set[str]]]:
    """(base dependency names, extra -> names), canonical."""
    project = tomllib.loads(pyproject.read_text())["project"]
    base = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {e: {requirement_name(r) for r in reqs} for e, reqs in project.get("optional-dependencies", {}).items()}
    return base, extras


@dataclass
class Import:
    module: str  # the importing module, e.g. harness.sweep.executors
    target: str  # what it imports, absolute (e.g. ray, harness.sweep.store)
    line: int
    eager: bool  # runs when the module is imported (module level, not TYPE_CHECKING, not guarded)
    guarded: bool  # inside try/except ImportError, or through import_extra
    extra: str | None = None  # the extra an import_extra call names


def _catches_import_error(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
    for h in node.handlers:
        types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
        if h.type is None or any(isinstance(t, ast.Name) and t.id in names for t in types):
            return True
    return False


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def module_imports(path: Path, module: str, is_package: bool) -> list[Import]:
    """The imports of one source file, each with where it runs."""
    found: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]

    def walk(node: ast.AST, eager: bool, guarded: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            eager = False  # its body runs when called, not on import
        if isinstance(node, ast.If) and _is_type_checking(node):
            for part in node.orelse:
                walk(part, eager, guarded)
            return
        if isinstance(node, ast.Try) and _catches_import_error(node):
            for part in node.body:
                walk(part, eager, True)
            for part in node.handlers + node.orelse + node.finalbody:
                walk(part, eager, guarded)
            return
        record(node, eager, guarded)
        for child in ast.iter_child_nodes(node):
            walk(child, eager, guarded)

    def record(node: ast.AST, eager: bool, guarded: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(module, a.name, node.lineno, eager and not guarded, guarded) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            first_party = base.split(".")[0] in FIRST_PARTY  # `from pkg import submodule` imports it too
            targets = [base] + ([f"{base}.{a.name}" for a in node.names] if first_party else [])
            found.extend(Import(module, t, node.lineno, eager and not guarded, guarded) for t in targets)
        elif (isinstance(node, ast.Call)
              and getattr(node.func, "id", getattr(node.func, "attr", None)) == "import_extra"
              and len(node.args) >= 2 and all(isinstance(a, ast.Constant) for a in node.args[:2])):
            found.append(Import(module, node.args[0].value, node.lineno, False, True, extra=node.args[1].value))

    walk(ast.parse(path.read_text(), filename=str(path)), True, False)
    return found


def scan(root: Path, packages: dict[str, str]) -> tuple[dict[str, list[Import]], dict[str, str]]:
    """(module name -> its imports, module name -> the extra it is gated behind), for every .py
    file under root/<folder> of `packages`."""
    modules: dict[str, list[Import]] = {}
    gated: dict[str, str] = {}
    for folder, package in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder).with_suffix("")
            parts = [package, *rel.parts]
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = module_imports(path, name, is_package)
            if (extra := extra_gate(path)) is not None:
                gated[name] = extra
    return modules, gated


def extra_gate(path: Path) -> str | None:
    """The extra a module declares it needs (`REQUIRES_EXTRA = "lm-eval"` at module level): the
    module is imported only where that extra is known to be installed, so it may import it freely."""
    for node in ast.parse(path.read_text()).body:
        if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "REQUIRES_EXTRA" for t in node.targets)
                and isinstance(node.value, ast.Constant)):
            return node.value.value
    return None


def base_reachable(modules: dict[str, list[Import]], gated: dict[str, str], roots=ROOT_PATTERNS) -> set[str]:
    """Modules that the base install imports: the roots and every first-party module they import,
    at module level or in a function, up to the modules gated behind an extra."""
    todo = [m for m in modules if any(re.fullmatch(p, m) for p in roots)]
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m in seen or m not in modules or m in gated:
            continue
        seen.add(m)
        parents = [".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)]
        todo.extend(p for p in parents if p in modules)  # importing a.b.c runs a and a.b
        todo.extend(imp.target for imp in modules[m] if imp.target.split(".")[0] in FIRST_PARTY)
    return seen


def distributions(module: str, mapping: dict[str, list[str]]) -> set[str]:
    top = module.split(".")[0]
    return {canonical(d) for d in mapping.get(top, [top])}  # not installed: assume the same name


def problems(root: Path, packages: dict[str, str] = PACKAGES, pyproject: Path | None = None) -> list[str]:
    """Every import that a base install or an extra cannot satisfy, one line each."""
    base, extras = declared(pyproject or root / "pyproject.toml")
    in_extras = set().union(*extras.values()) if extras else set()
    mapping = packages_distributions()
    modules, gated = scan(root, packages)
    reachable = base_reachable(modules, gated)
    out = []
    for module, imports in modules.items():
        for imp in imports:
            top = imp.target.split(".")[0]
            if not top or top in FIRST_PARTY or top in sys.stdlib_module_names or top == "__future__":
                continue
            dists = distributions(imp.target, mapping)
            where = f"{module}:{imp.line} imports {top!r} ({', '.join(sorted(dists))})"
            if not dists & (base | in_extras):
                out.append(f"{where}: declared nowhere in pyproject.toml (dependencies or an extra)")
            elif dists & base:
                continue
            elif module in gated and not dists & extras.get(gated[module], set()):
                out.append(f"{where}: the module is gated behind extra {gated[module]!r}, which does not declare it")
            elif imp.extra is not None and not dists & extras.get(imp.extra, set()):
                out.append(f"{where}: import_extra names extra {imp.extra!r}, which does not declare it")
            elif imp.eager and module in reachable:
                out.append(f"{where}: at module level in a module the base install imports, but only an extra "
                           f"declares it: declare it in dependencies, or import it lazily with import_extra")
            elif not imp.guarded and module in reachable:
                out.append(f"{where}: unguarded lazy import of an extra's package in a module the base install "
                           f"imports: use harness._lazy.import_extra (it names the extra to install)")
    return out


def test_every_third_party_import_is_declared():
    found = problems(ROOT)
    assert not found, "undeclared or unguarded imports:\n" + "\n".join(found)


def test_the_base_install_reaches_the_cli_tasks_and_variants():
    """The reachability the checks rely on is not empty (a renamed entry would make rule 2 vacuous)."""
    reachable = base_reachable(*scan(ROOT, PACKAGES))
    for name in ("harness.cli", "harness.console", "harness.sweep.driver",
                 "harness.tasks.recall", "harness.variants.gla", "harness.report.figures"):
        assert name in reachable, name
    assert "harness.integrations.lm_eval.adapter" not in reachable  # lm-eval's own entry


def _seed_package(tmp_path: Path, body: str, deps: str = '"torch", "numpy"', extras: str = 'ray = ["ray"]') -> Path:
    pkg = tmp_path / "harness"
    (pkg / "tasks").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("import harness.tasks.seeded\n")
    (pkg / "tasks" / "__init__.py").write_text("")
    (pkg / "tasks" / "seeded.py").write_text(textwrap.dedent(body))
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "x"\ndependencies = [{deps}]\n[project.optional-dependencies]\n{extras}\n')
    return tmp_path


def _seeded_problems(tmp_path: Path, body: str, **kw) -> list[str]:
    root = _seed_package(tmp_path, body, **kw)
    return problems(root, {"harness": "harness"})


def test_fails_on_a_deliberately_undeclared_import(tmp_path):
    """jinja2 is installed (torch needs it) but this project declares it nowhere: click's story."""
    found = _seeded_problems(tmp_path, "import torch\nimport jinja2\n")
    assert len(found) == 1 and "'jinja2'" in found[0] and "declared nowhere" in found[0], found


def test_fails_on_an_extra_imported_at_module_level_by_the_base_install(tmp_path):
    found = _seeded_problems(tmp_path, "import ray\n")
    assert len(found) == 1 and "module level" in found[0], found


def test_fails_on_an_unguarded_lazy_import_of_an_extra(tmp_path):
    found = _seeded_problems(tmp_path, "def run():\n    import ray.util\n")
    assert len(found) == 1 and "unguarded" in found[0], found


def test_fails_on_import_extra_naming_the_wrong_extra(tmp_path):
    body = "from harness._lazy import import_extra\ndef run():\n    import_extra('ray', 'gpu', 'x')\n"
    found = _seeded_problems(tmp_path, body, extras='ray = ["ray"]\ngpu = ["triton"]')
    assert len(found) == 1 and "names extra 'gpu'" in found[0], found


def test_guarded_and_type_checking_imports_pass(tmp_path):
    body = """
        from typing import TYPE_CHECKING
        import numpy
        from harness._lazy import import_extra
        if TYPE_CHECKING:
            import ray
        def a():
            try:
                import ray
            except ImportError:
                raise RuntimeError("pip install 'x[ray]'")
        def b():
            return import_extra("ray", "ray", "the Ray executor")
    """
    assert _seeded_problems(tmp_path, body) == []


def test_import_extra_names_the_pip_command():
    from harness._lazy import import_extra

    assert import_extra("json", "ray", "x").dumps([]) == "[]"
    with pytest.raises(ImportError,
                       match=r"the Ray executor needs 'no_such_pkg_x'.*pip install 'hybrid-attention-harness\[ray\]'"):
        import_extra("no_such_pkg_x.sub", "ray", "the Ray executor")
