"""The package's modules import one another without a cycle.

Counted: every import at a module's top level, those under `if TYPE_CHECKING:` included (a
cycle mypy has to untangle is a cycle a reader has to untangle too). Not counted: imports
inside a function, which is how a module names something it needs only when called (a
provider class built on first use, say).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import palyra

PACKAGE = Path(palyra.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run when the module is imported (or type-checked): into `if` and
    `try` blocks, not into functions or classes."""
    for node in body:
        if isinstance(node, ast.If):
            yield from top_level(node.body)
            yield from top_level(node.orelse)
        elif isinstance(node, ast.Try):
            yield from top_level(node.body)
            for handler in node.handlers:
                yield from top_level(handler.body)
            yield from top_level(node.orelse)
            yield from top_level(node.finalbody)
        else:
            yield node


def imports_of(name: str, source: str, modules: set[str], *, is_package: bool = False) -> set[str]:
    """The modules of `modules` that module `name` imports at its top level."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in top_level(ast.parse(source).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                # `from palyra.models import openai` names a module; `import X` of a name
                # defined in a package's __init__ is an edge to the package.
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {
        name: imports_of(
            name, path.read_text(encoding="utf-8"), modules, is_package=path.name == "__init__.py"
        )
        for name, path in paths.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 100  # the walk found the package
    found = cycles(graph)
    described = [
        " ; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in found
    ]
    assert found == [], "\n".join(described)


def test_the_check_sees_a_cycle_through_type_checking() -> None:
    # The shape the package had: auth/refresh.py named AuthService under TYPE_CHECKING while
    # auth/service.py imported the Refresher. Found, and named; a function's import is not.
    modules = {"palyra.auth.refresh", "palyra.auth.service", "palyra.config"}
    refresh = (
        "from typing import TYPE_CHECKING\n"
        "from palyra.config import PalyraConfig\n"
        "if TYPE_CHECKING:\n"
        "    from palyra.auth.service import AuthService\n"
    )
    service = "from .refresh import Refresher\ndef later():\n    import palyra.config\n"
    graph = {
        "palyra.auth.refresh": imports_of("palyra.auth.refresh", refresh, modules),
        "palyra.auth.service": imports_of("palyra.auth.service", service, modules),
        "palyra.config": set(),
    }
    assert graph["palyra.auth.service"] == {"palyra.auth.refresh"}
    assert cycles(graph) == [["palyra.auth.refresh", "palyra.auth.service"]]
