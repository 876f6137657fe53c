"""No import cycles between project files, and the layers of DESIGN.md: read with ``ast`` (nothing is imported).

Every ``import`` counts, at module level or inside a function: a cycle hidden in a function body is still
two modules that cannot be understood (or moved) one without the other.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("searchr3", "tasks", "flows", "ops")


def project_modules(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    """Dotted name -> file, for every ``.py`` file of ``packages`` (a package is its ``__init__.py``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict) -> str | None:
    """The project module ``name`` refers to: itself, or its closest enclosing module (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, going up level - 1 times
                    package = _package_of(module, path).split(".")
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = _resolve(name, modules)
                if target is not None and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted; every cycle is in one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []
    assert sorted(cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}})) == [["a", "b"], ["c", "d"]]


def test_the_graph_reads_every_import_form(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import x\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from pkg import top\n")
    (pkg / "top.py").write_text("import pkg.sub.leaf\nfrom pkg.sub import leaf\nimport json\n")
    graph = import_graph(project_modules(tmp_path, ("pkg",)))
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.top"}  # an import inside a function counts
    assert graph["pkg.top"] == {"pkg.sub.leaf"}
    assert cycles(graph) == [["pkg.sub.leaf", "pkg.top"]]


def test_no_import_cycles_between_project_files():
    modules = project_modules()
    assert {"searchr3.stages", "tasks.dvc", "flows.pipeline", "ops.prefect_local"} <= set(modules)
    found = cycles(import_graph(modules))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_layers_library_never_imports_orchestration():
    """searchr3/ imports neither tasks/, flows/ nor ops/; tasks/ never imports flows/; ops/ imports neither."""
    graph = import_graph(project_modules())
    top = {m: m.split(".")[0] for m in graph}
    allowed = {"searchr3": {"searchr3"}, "tasks": {"searchr3", "tasks", "ops"}, "ops": {"ops"},
               "flows": {"searchr3", "tasks", "flows", "ops"}}
    wrong = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if top[t] not in allowed[top[m]])
    assert not wrong, wrong
