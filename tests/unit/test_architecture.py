"""The package's import graph: subpackages import only their own layer or those below, and nothing cycles.

The layers, bottom up, are those of ``docs/ARCHITECTURE.md``: the engine's foundation modules
(``engine/*.py``), ``models``, ``audio``, ``checkpoints``, ``weights``, ``sampling``, ``train``; the front
ends sit on top, side by side: the CLI and the studio (which shows errors in the CLI's words, and which the
CLI starts). Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "jukebox_cli"
LAYERS = {
    "foundation": 0,
    "models": 1,
    "audio": 2,
    "checkpoints": 3,
    "weights": 4,
    "sampling": 5,
    "train": 6,
    "cli": 7,
    "studio": 7,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[:2] in (["jukebox_cli", "cli"], ["jukebox_cli", "studio"]):
        return LAYERS[parts[1]]
    if parts[:2] != ["jukebox_cli", "engine"] or len(parts) < 3:
        return None  # the package root and the engine's lazy front door
    if parts[2] in LAYERS:
        return LAYERS[parts[2]]
    return LAYERS["foundation"]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported jukebox_cli module, inside a function and not marked ``# lazy:``, line) for every import of
    the package. A marked import is one whose line, or the comment line before its group, says ``# lazy:``."""
    found: list[tuple[str, bool, int]] = []
    lines = path.read_text().splitlines()

    def marked(line: int) -> bool:
        index = line - 1  # the import's own line
        if "# lazy:" in lines[index]:
            return True
        index -= 1
        while index >= 0 and lines[index].strip().startswith(("from ", "import ")):
            index -= 1  # the other imports of the same group
        return index >= 0 and "# lazy:" in lines[index]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module.startswith("jukebox_cli"):
                    for alias in child.names:  # `from pkg import module` imports the module itself
                        sub = f"{child.module}.{alias.name}"
                        found.append(
                            (
                                sub if sub in MODULES else child.module,
                                nested and not marked(child.lineno),
                                child.lineno,
                            )
                        )
            elif isinstance(child, ast.Import):
                found.extend(
                    (a.name, nested, child.lineno) for a in child.names if a.name.startswith("jukebox_cli")
                )
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_every_import_names_a_module_of_the_package() -> None:
    unknown = [(m, t) for m, edges in GRAPH.items() for t, _, _ in edges if t not in MODULES]
    assert not unknown


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) is not None))
def test_modules_import_only_their_layer_or_below(module: str) -> None:
    upward = [
        f"{target} (line {line})"
        for target, _, line in GRAPH[module]
        if _layer(target) is not None and _layer(target) > _layer(module)
    ]
    assert not upward, f"{module} imports from a higher layer: {upward}"


def test_the_engine_imports_its_own_modules_at_the_top() -> None:
    """No import inside a function to dodge a cycle (the layering leaves none to dodge); the few that keep
    torch out of a cheap path say so with ``# lazy:``."""
    local = [
        f"{module}:{line} {target}"
        for module, edges in GRAPH.items()
        if module.startswith("jukebox_cli.engine")
        for target, in_function, line in edges
        if in_function
    ]
    assert not local


def test_there_is_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target, _, _ in GRAPH[node]:
            if target == node or target not in GRAPH:
                continue
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            connect(module)
    assert not cycles


def test_lazy_imports_must_say_why(tmp_path: Path) -> None:
    path = tmp_path / "lazy.py"
    path.write_text(
        "def f():\n    from jukebox_cli.engine.errors import ConfigError\n\n\n"
        "def g():\n    # lazy: keeps torch out of a cheap path\n    from jukebox_cli.engine.errors import ConfigError\n"
    )
    assert [in_function for _, in_function, _ in _imports(path)] == [True, False]


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The layer rule can fail: a models module importing sampling is caught."""
    path = tmp_path / "bad.py"
    path.write_text("from jukebox_cli.engine.sampling.windows import plan_level\n")
    ((target, in_function, _),) = _imports(path)
    assert _layer(target) > _layer("jukebox_cli.engine.models.prior") and not in_function
