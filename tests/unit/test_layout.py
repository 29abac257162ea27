"""The package's shape: no import cycles, and the product never loads the dev tooling."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pipeline"
DEV_PREFIXES = ("pipeline.dev", "bench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that `path` imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return {name for name in found if name in modules and not _is_package(modules[name])}


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            groups.append([node, *group])

    for node in graph:
        if node not in index:
            visit(node)
    return [g for g in groups if len(g) > 1 or g[0] in graph[g[0]]]


def test_no_module_of_the_package_imports_another_that_imports_it_back():
    modules = _modules()
    graph = {name: _imports(path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_no_product_module_imports_dev_tooling_or_benchmarks():
    modules = _modules()
    product = {n: p for n, p in modules.items() if not n.startswith(DEV_PREFIXES)}
    leaks = {
        name: sorted(
            i for i in _imports(path, modules) | _raw_imports(path) if i.startswith(DEV_PREFIXES)
        )
        for name, path in product.items()
    }
    # The demo command is the one door to the dev tooling, opened only when it runs.
    leaks.pop("pipeline.cli.demo", None)
    assert {name: found for name, found in leaks.items() if found} == {}


def _raw_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_importing_the_cli_and_the_library_api_loads_no_dev_tooling():
    code = (
        "import sys, pipeline.cli\n"
        "from pipeline import build_config, run_backfill, RunResult\n"
        "import pipeline.fetch.worker, pipeline.store.writer\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pipeline.dev', 'bench'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_command_line_can_ask_the_endpoints_before_it_loads_pyarrow():
    # The preflight's round trips overlap the ~0.3 s of importing pyarrow and numpy, which
    # only the run itself needs.
    code = (
        "import sys, pipeline.cli, pipeline.run.preflight\n"
        "print(sorted(m for m in ('pyarrow', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
