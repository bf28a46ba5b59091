"""The packages depend in one direction: ``starter`` and ``activities`` on ``workflows`` (its
models are the workflow's contract), all three on ``common``, and ``common`` on none of them;
``workflows.registration`` calls activities, so ``workflows`` may import ``activities`` (the
activities' models in turn use the workflow's). And no module imports itself back, by any path.

Imports are read from the source (``ast``), at module level: those inside ``if TYPE_CHECKING``
(or ``with workflow.unsafe.imports_passed_through()``) count, those inside a function do not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "workflows", "starter", "activities")

FORBIDDEN = {
    "common": ("workflows", "activities", "starter"),
    "starter": ("activities",),
    "workflows": ("starter",),
}
"""Package -> packages none of its modules may import."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")
    }


def module_level(nodes: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports among ``nodes``, also inside ``if``, ``try``, ``with`` and class bodies: all
    that runs, or that a type checker follows, when the module is imported; not functions."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for field in ("body", "orelse", "finalbody"):
                yield from module_level(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                yield from module_level(handler.body)


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The project modules that module ``name`` imports at module level (``from a import b``
    imports ``a.b`` when that is a module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in module_level(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        found.update(target for target in targets if target in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_the_graph_sees_the_imports_it_must() -> None:
    """The parser finds imports at module level, under ``TYPE_CHECKING`` and in a ``with``."""
    graph = import_graph()
    assert "common.identifiers" in graph["common.settings"]
    assert "activities.codes" in graph["workflows.registration"]  # in imports_passed_through
    assert "workflows.models" in graph["activities.codes"]


def test_packages_import_only_downwards() -> None:
    wrong = sorted(
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], ())
    )
    assert wrong == []


def test_no_module_imports_itself_back() -> None:
    graph = import_graph()
    cycles = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target, [*path, target])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == []
