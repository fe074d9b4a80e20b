"""The library's imports flow one way: presets -> model / data -> metrics -> engine -> experiments ->
reporting -> cli, with no import cycle between modules (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import piade_lib

PKG = Path(piade_lib.__file__).parent

# a package may import from its own layer or a lower one, never from a higher one
LAYERS = {
    "presets": 0,
    "paper_results": 0,
    "model": 1,
    "data": 1,
    "metrics": 2,
    "engine": 3,
    "experiments": 4,
    "reporting": 5,
    "cli": 6,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if mod.startswith("piade_lib"):
                    for alias in node.names:  # "from piade_lib.engine import files" imports a module
                        sub = f"{mod}.{alias.name}"
                        deps.add(sub if (PKG.parent / Path(*sub.split("."))).with_suffix(".py").is_file() else mod)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("piade_lib"))
        graph[name] = {d for d in deps if d != name}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_top_level_module_has_a_layer():
    tops = {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
    }
    assert tops == set(LAYERS), f"give these a layer in tests/test_architecture.py: {sorted(tops ^ set(LAYERS))}"


def test_imports_never_go_up_a_layer():
    upward = [
        f"{m} -> {d}"
        for m, deps in _imports().items()
        for d in deps
        if _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m)
    ]
    assert upward == [], "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = _imports()
    # a package's __init__ re-exports its own modules: an edge into a package means its __init__
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for dep in graph.get(node, ()):
            if dep.startswith(node + "."):  # a package importing its own submodule (re-export)
                continue
            if seen.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in seen:
                visit(dep)
        stack.pop()
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
