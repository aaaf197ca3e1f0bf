"""The scheduler package's imports run one way: all at module level, no cycle between its modules."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import controlplane.scheduler

PACKAGE = controlplane.scheduler.__name__
PACKAGE_DIR = Path(controlplane.scheduler.__file__).parent
MODULES = sorted(path.stem for path in PACKAGE_DIR.glob("*.py") if path.stem != "__init__")


def _tree(module: str) -> ast.Module:
    path = PACKAGE_DIR / f"{module}.py"
    return ast.parse(path.read_text(), filename=str(path))


def _imported_modules(node: ast.Import | ast.ImportFrom) -> set[str]:
    """Dotted names this import statement may load, with relative imports resolved."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        parts = PACKAGE.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1])
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    # `from package import module` loads a submodule; `from module import name` loads module.
    return {source} | {f"{source}.{alias.name}" for alias in node.names}


def _sibling_imports(module: str) -> set[str]:
    siblings = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported_modules(node):
                prefix, _, rest = name.partition(f"{PACKAGE}.")
                if not prefix and rest and rest.split(".")[0] in MODULES:
                    siblings.add(rest.split(".")[0])
    siblings.discard(module)
    return siblings


def test_the_package_has_the_modules_this_test_reads() -> None:
    assert {"model", "planner", "filters", "scorers"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_every_import_is_at_module_level(module: str) -> None:
    """No import inside a function, class, `if TYPE_CHECKING:` or `try:`: such imports dodge cycles."""
    tree = _tree(module)
    top_level = {id(node) for node in tree.body}
    nested = [
        f"{module}.py:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top_level
    ]
    assert nested == []


def test_the_import_graph_between_scheduler_modules_has_no_cycle() -> None:
    graph = {module: _sibling_imports(module) for module in MODULES}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle in {PACKAGE}: {' -> '.join(error.args[1])}")
    assert set(order) == set(MODULES)


def test_model_imports_nothing_of_the_scheduler() -> None:
    assert _sibling_imports("model") == set()
