"""The package's layering, read from its imports: data flows one way.

Every module sits on a floor; a module imports only modules on floors below its own (or modules
of its own subpackage, without cycles). Only ``cli/`` and ``display/`` know Click, rich and tqdm,
and no library module imports them. This test replaces the README's old claim with a check.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "charlstm"

# Lower floors first. A subpackage is one floor; the top-level modules each have their own.
FLOORS = [
    ("errors", "_version"),
    ("config", "atomic", "hardware", "distributed", "products", "lnlstm"),
    ("cells",),
    ("model", "stepper"),
    ("data",),
    ("runs",),
    ("evaluation", "analysis"),
    ("generation", "compression"),
    ("training",),
    ("display",),
    ("api", "__init__"),
    ("export", "serving"),
    ("cli",),
    ("__main__",),
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}
UI_LIBRARIES = {"click", "rich", "tqdm"}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def _place(module: str) -> str:
    """The floor name of ``charlstm.<module>``: its subpackage, or the top-level module itself."""
    return module.split(".")[0]


def _imports(path: pathlib.Path) -> list[tuple[str, int]]:
    """(imported name, line) for every import in the file, at any depth (lazy imports count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "charlstm":
                found += [(f"charlstm.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((node.module, node.lineno))
    return found


def test_every_module_has_a_floor():
    missing = sorted({_place(m) for m in _modules()} - set(FLOOR))
    assert missing == [], f"give these a floor in FLOORS: {missing}"


def test_no_module_imports_one_above_it():
    problems = []
    for module, path in _modules().items():
        here = FLOOR[_place(module)]
        for name, line in _imports(path):
            if not name.startswith("charlstm.") or name == "charlstm.__version__":
                continue
            target = _place(name[len("charlstm."):])
            if target == _place(module):
                continue
            if FLOOR.get(target, -1) >= here:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} (floor {FLOOR.get(target)} >= {here})")
    assert problems == []


def test_no_cycles_inside_a_subpackage():
    graph: dict[str, set[str]] = {}
    for module, path in _modules().items():
        graph[module] = {
            name[len("charlstm."):]
            for name, _ in _imports(path)
            if name.startswith("charlstm.") and _place(name[len("charlstm."):]) == _place(module)
        } & set(_modules())
    done: set[str] = set()

    def visit(node: str, stack: tuple[str, ...]) -> None:
        if node in stack:
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(node):] + (node,)))
        if node in done:
            return
        for child in graph.get(node, ()):
            visit(child, stack + (node,))
        done.add(node)

    for module in graph:
        visit(module, ())


def test_only_cli_and_display_know_the_terminal_libraries():
    problems = []
    for module, path in _modules().items():
        if _place(module) in ("cli", "display", "__main__"):
            continue
        for name, line in _imports(path):
            if name.split(".")[0] in UI_LIBRARIES:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert problems == []


def test_the_floors_catch_an_upward_import(tmp_path):
    """The check itself can fail: a data module importing training is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from charlstm.training.trainer import train\n")
    (name, _), = _imports(bad)
    assert FLOOR[_place(name[len("charlstm."):])] > FLOOR["data"]
