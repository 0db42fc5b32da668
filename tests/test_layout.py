"""The house's layout: no import cycle among the project's modules, and the simulator is a tool,
not the product (``tasks/`` and ``flows/`` never import it when they load).

The import graph is read from the sources (every ``import`` statement: at module level, inside a
function, or under ``if TYPE_CHECKING``), so a cycle hidden behind a lazy import still counts.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tasks.settings import PROJECT_ROOT

#: The packages whose modules must form an acyclic import graph.
PACKAGES = ("tasks", "flows", "simulator", "bench")
#: The product: what `pip install` serves to run the pipeline.
PRODUCT = ("tasks", "flows")


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported_names(module: str, is_package: bool, node: ast.AST) -> Iterator[str]:
    """Dotted names an import statement may load (``from a import b`` may load module ``a.b``)."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, *([node.module] if node.module else [])])
        yield base
        yield from (f"{base}.{a.name}" for a in node.names)


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the project's modules it imports anywhere in its source."""
    modules = _modules(root, packages)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for name in _imported_names(module, path.name == "__init__.py", node):
                target = resolve(name)
                # `import a.b` also runs a/__init__.py: an edge to a package's own __init__ is no cycle
                if target and target != module and not module.startswith(target + "."):
                    deps.add(target)
        graph[module] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    edges = [f"{m} -> {d}" for m in component for d in sorted(graph[m]) if d in component]
    return "cycle among " + ", ".join(component) + ": " + "; ".join(edges)


def test_no_import_cycle() -> None:
    graph = import_graph(PROJECT_ROOT, PACKAGES)
    assert {"tasks.cli", "flows.nightly", "simulator.dataset", "bench.run"} <= set(graph)
    found = cycles(graph)
    assert not found, "\n".join(_describe(graph, c) for c in found)


def test_the_cycle_finder_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The checker itself: a cycle closed by an import inside a function, or by a relative import,
    is found; a one-way chain and a module importing its own package are not cycles."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg.a import A\n")
    (pkg / "a.py").write_text("from pkg.b import B\nA = 1\n")
    (pkg / "b.py").write_text("B = 2\n\ndef later():\n    from pkg import a\n    return a\n")
    (pkg / "c.py").write_text("from . import d\n")
    (pkg / "d.py").write_text("from .c import x\n")
    (pkg / "e.py").write_text("import pkg.a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]
    assert cycles({"x": {"y"}, "y": {"z"}, "z": set()}) == []


def _module_level_imports(tree: ast.Module) -> Iterator[ast.AST]:
    """Import statements that run when the module loads (not those inside a function)."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))


def test_the_product_never_imports_the_simulator_when_it_loads() -> None:
    modules = _modules(PROJECT_ROOT, PRODUCT)
    offenders = []
    for module, path in modules.items():
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = list(_imported_names(module, path.name == "__init__.py", node))
            if any(n == "simulator" or n.startswith("simulator.") for n in names):
                offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
    assert not offenders, f"module-level imports of the simulator in the product: {offenders}"

    # and at run time: every product module loaded, the CLI built and its help listed
    code = (
        "import importlib, json, sys, typer\n"
        f"for m in {sorted(modules)!r}:\n"
        "    importlib.import_module(m)\n"
        "from tasks.cli import app\n"
        "group = typer.main.get_command(app)\n"
        "ctx = group.make_context('dvc-etl', ['status'])\n"
        "listed = group.list_commands(ctx)\n"
        "[group.get_command(ctx, n) for n in listed if n != 'simulate']\n"
        "before = sorted(m for m in sys.modules if m.split('.')[0] == 'simulator')\n"
        "group.get_command(ctx, 'simulate')\n"
        "after = sorted(m for m in sys.modules if m.split('.')[0] == 'simulator')\n"
        "print(json.dumps({'listed': listed, 'before': before, 'after': after}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert "simulate" in seen["listed"]
    assert seen["before"] == [], f"the product loaded the simulator: {seen['before']}"
    # `dvc-etl simulate` loads only the simulator's command line; its dataset and server load when a command runs
    assert seen["after"] == ["simulator", "simulator.cli"], seen["after"]


def test_the_files_scheduled_first_exist():
    """``tests/conftest.py`` runs its RUN_FIRST files first; a renamed file would silently lose it."""
    from tests.conftest import RUN_FIRST

    missing = [name for name in RUN_FIRST if not (Path(__file__).parent / name).is_file()]
    assert not missing, missing
