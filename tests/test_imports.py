"""The package's modules import one another without a cycle.

Counted: every import at a module's top level, those under `if TYPE_CHECKING:` included (a
cycle mypy has to untangle is a cycle a reader has to untangle too). Not counted: imports
inside a function, which is how a module names something it needs only when called (a
provider class built on first use, say).

And no test module imports another test module (any import, in a function too): what tests
share lives in tests/support/, tests/fakes/ or a conftest.py.
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


# --- the tests' own imports ---------------------------------------------------------------

TESTS = Path(__file__).parent


def enclosing_test_module(name: str) -> str | None:
    """The `tests...test_*` module that dotted `name` is or lies in, if any."""
    parts = name.split(".")
    if parts[0] != "tests":
        return None
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("test_"):
            return ".".join(parts[: i + 1])
    return None


def imported_test_modules(name: str, source: str, *, is_package: bool = False) -> set[str]:
    """The `tests...test_*` modules that module `name` imports anywhere, in a function too."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(m for n in names if (m := enclosing_test_module(n)) is not None)
    return found


def test_no_test_module_imports_another() -> None:
    # A test module is run, not imported: what tests share lives in tests/support/ (helpers),
    # tests/fakes/ (fakes of outside parts) or a conftest.py (fixtures).
    offenders = []
    paths = sorted(TESTS.rglob("*.py"))
    assert len(paths) > 50  # the walk found the tests
    for path in paths:
        parts = list(path.relative_to(TESTS.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        source = path.read_text(encoding="utf-8")
        for imported in sorted(imported_test_modules(name, source, is_package=is_package)):
            offenders.append(f"{path.relative_to(TESTS.parent)} imports {imported}")
    assert offenders == [], "\n".join(offenders)


def test_the_check_sees_a_test_module_imported() -> None:
    source = (
        "from tests.support.cli import palyra\n"
        "from tests.cli.test_cli import isolated_env\n"
        "from .test_keys_page import api\n"
        "from tests.fakes import test_upstream\n"
        "def later():\n"
        "    import tests.test_budgets\n"
    )
    assert imported_test_modules("tests.console.test_usage_page", source) == {
        "tests.cli.test_cli",
        "tests.console.test_keys_page",
        "tests.fakes.test_upstream",
        "tests.test_budgets",
    }
