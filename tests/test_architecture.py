"""The package layout keeps its layers: a newcomer can read each module knowing what it may lean on.

Imports anywhere in a module count (also those inside functions, which the CLI uses to stay fast)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("sweeper", "trainers")

# Modules that only read and compute: they import nothing of the run path.
LEAVES = {
    "sweeper.errors",
    "sweeper.objective",
    "sweeper.identity",
    "sweeper.yaml_lines",
    "sweeper.record",
    "sweeper.store",
    "sweeper.analysis",
    "sweeper.display",
    "sweeper.values",
    "sweeper.read_cache",
}
FOUNDATIONS = {
    "sweeper",
    "sweeper.errors",
    "sweeper.objective",
    "sweeper.identity",
    "sweeper.record",
    "sweeper.store",
    "sweeper.user_config",
    "sweeper.values",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {
        name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()
    }


def test_trainers_never_import_sweeper():
    offenders = {m: sorted(i for i in deps if i.startswith("sweeper")) for m, deps in graph().items()}
    assert {m: d for m, d in offenders.items() if m.startswith("trainers") and d} == {}


def test_leaves_lean_only_on_foundations():
    deps = graph()
    wrong = {
        leaf: sorted(d for d in deps[leaf] if d.startswith("sweeper") and d not in FOUNDATIONS)
        for leaf in LEAVES
    }
    assert {leaf: d for leaf, d in wrong.items() if d} == {}


def test_no_import_cycles():
    deps = graph()
    # A package's __init__ re-exporting its submodules is not a cycle of meaning: skip parent->child edges.
    edges = {m: {d for d in ds if not d.startswith(m + ".")} for m, ds in deps.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_the_cli_reaches_the_run_command():
    importers = {m for m, deps in graph().items() if "sweeper.run" in deps or "sweeper.cli" in deps}
    assert importers <= {"sweeper.cli"}
