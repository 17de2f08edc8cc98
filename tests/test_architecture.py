"""The engine's layout: no import cycles (function-level imports included) and no upward import.

docs/ARCHITECTURE.md draws these layers; a new module gets a layer here when it is added.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "e2vpt_core"

# Top-level modules and packages of e2vpt_core, bottom up. An import may only go to a lower
# layer (or stay inside its own package).
LAYERS = {
    "lazy": 0, "fileio": 0, "catalog": 0, "methods": 0, "signals": 0, "stats": 0,
    "config": 1,
    "models": 2, "data": 2, "store": 2,
    "artifacts": 3,
    "train": 4, "pretrain": 4,
    "prune": 5, "hyperbolic": 5,
    "protocol": 6, "jobs": 6, "report": 6,
    "demo": 7, "cli": 7,
    "__init__": 8, "__main__": 8,
}


def _modules() -> dict[str, Path]:
    """Dotted names (relative to e2vpt_core, '' for the package itself) → files."""
    modules = {}
    for path in ENGINE.rglob("*.py"):
        parts = list(path.relative_to(ENGINE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Every engine module each module imports, at any depth of its code."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        package = [p for p in package if p]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    relative = [node.module] if node.module else []
                elif (node.module or "").split(".")[0] == "e2vpt_core":
                    base, relative = [], node.module.split(".")[1:]
                else:
                    continue
                module = ".".join(base + relative)
                subs = [f"{module}.{a.name}".lstrip(".") for a in node.names]
                targets = [s for s in subs if s in modules] or [module]
            elif isinstance(node, ast.Import):
                targets = [a.name.removeprefix("e2vpt_core").lstrip(".") for a in node.names
                           if a.name.split(".")[0] == "e2vpt_core"]
            else:
                continue
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def _top(name: str) -> str:
    return name.split(".")[0] if name else "__init__"


def _package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = defaultdict(set)
    for source, targets in edges.items():
        packages[_top(source)].update(_top(t) for t in targets if _top(t) != _top(source))
    return packages


def test_no_import_cycle_between_modules_or_packages():
    edges = _imports(_modules())
    assert _cycles(edges) == []
    assert _cycles(_package_edges(edges)) == []


def test_imports_only_go_down_the_layers():
    modules = _modules()
    tops = {_top(name) for name in modules}
    assert tops <= set(LAYERS), f"give {sorted(tops - set(LAYERS))} a layer in LAYERS"
    upward = [(source, target) for source, targets in _package_edges(_imports(modules)).items()
              for target in targets if LAYERS[target] >= LAYERS[source]]
    assert upward == []


def test_the_checker_sees_function_level_imports(tmp_path, monkeypatch):
    """A cycle hidden in a function body is still a cycle."""
    package = tmp_path / "e2vpt_core"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import f\n")
    (package / "b.py").write_text("def f():\n    from .a import g\n")
    monkeypatch.setattr(sys.modules[__name__], "ENGINE", package)
    assert _cycles(_imports(_modules())) == [["a", "b"]]
    assert _package_edges(_imports(_modules()))["a"] == {"b"}


@pytest.mark.parametrize("package", ["store", "pretrain", "protocol", "cli", "models", "data",
                                     "train", "prune", "hyperbolic", "report"])
def test_every_subsystem_says_what_it_is(package):
    docstring = ast.get_docstring(ast.parse((ENGINE / package / "__init__.py").read_text()))
    assert docstring and docstring.strip()


def test_the_top_level_stays_small():
    top_modules = [p.stem for p in ENGINE.glob("*.py") if not p.stem.startswith("__")]
    assert len(top_modules) <= 10, sorted(top_modules)
