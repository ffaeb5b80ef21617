"""The layering of the code: no import cycles, and one-way dependencies between the apps.

Apps: ``agents`` <- ``chats`` <- ``desktop`` (desktop registers the computer tool with chats in its
AppConfig.ready(); chats never imports desktop). Inside chats: models <- events <- tasks <- transitions
<- services <- tools <- engine; the tasks import the engine when they run (the one deferral).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("agents", "chatdesk", "chats", "desktop")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(*packages: str, migrations: bool = False) -> dict[str, Path]:
    """Return ``{module name: path}`` of the packages' Python files."""
    return {
        module_name(path): path
        for package in packages
        for path in sorted((ROOT / package).rglob("*.py"))
        if migrations or "migrations" not in path.parts
    }


ALL_MODULES = source_files(*PROJECT_PACKAGES)


@dataclass(frozen=True)
class Import:
    module: str  # the module imported (``from a.b import c``: a.b.c when that is a module, else a.b)
    line: int
    deferred: bool  # inside a function: runs when called, not when the module is imported


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> list[Import]:
    """Return the imports ``path`` runs (``if TYPE_CHECKING:`` blocks never run), in source order."""
    found: list[Import] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_node(other, deferred)
            else:
                visit_node(child, deferred)

    def visit_node(node: ast.AST, deferred: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, deferred) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: the project uses absolute imports only"
            base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append(Import(full if full in ALL_MODULES else base, node.lineno, deferred))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            visit(node, True)
        else:
            visit(node, deferred)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


def imports_of_package(package: str) -> list[tuple[str, Import]]:
    return [
        (name, found)
        for name, path in source_files(package, migrations=True).items()
        for found in imports_of(path)
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of ``graph`` with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module-level imports between the project's modules (what runs when a module is imported)."""
    return {
        name: {i.module for i in imports_of(path) if not i.deferred and i.module in ALL_MODULES} - {name}
        for name, path in ALL_MODULES.items()
    }


# --- the checks ------------------------------------------------------------------------------------


def test_the_project_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_chats_never_imports_desktop() -> None:
    """desktop depends on chats, never the reverse: chats offers a registration point instead."""
    offending = [
        f"{name}:{found.line} imports {found.module}"
        for name, found in imports_of_package("chats")
        if found.module.split(".")[0] == "desktop"
    ]
    assert offending == []


def test_agents_imports_neither_chats_nor_desktop() -> None:
    offending = [
        f"{name}:{found.line} imports {found.module}"
        for name, found in imports_of_package("agents")
        if found.module.split(".")[0] in ("chats", "desktop")
    ]
    assert offending == []


def test_the_import_checks_see_every_kind_of_import(tmp_path: Path) -> None:
    path = tmp_path / "sample.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "import desktop.client\n"
        "from desktop import tools\n"
        "if TYPE_CHECKING:\n"
        "    from desktop import services\n"
        "def f():\n"
        "    from desktop.computer import TOOL_NAME\n"
    )
    found = {(i.module, i.deferred) for i in imports_of(path)}
    assert found == {("typing", False), ("desktop.client", False), ("desktop.tools", False),
                     ("desktop.computer", True)}  # fmt: skip


def test_the_only_deferred_imports_in_chats_are_the_tasks_importing_the_engine() -> None:
    """The engine (and the approvals) sit above the services that send its tasks; everything else is
    imported at the top."""
    deferred = {
        (name, found.module)
        for name, found in imports_of_package("chats")
        if found.deferred and found.module.split(".")[0] in PROJECT_PACKAGES
    }
    assert deferred == {
        ("chats.tasks", "chats.engine"),
        ("chats.tasks", "chats.engine.lease"),
        ("chats.tasks", "chats.engine.compaction"),
        ("chats.tasks", "chats.approvals"),
    }


@pytest.mark.timeout(600)
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    # A __main__ module runs its program when imported: it is not a module to import.
    modules = sorted(
        name for name in source_files("chats", "desktop", "agents") if not name.endswith("__main__")
    )
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.import_alone", *modules],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(modules)} modules imported alone" in result.stdout


def test_importing_alone_reports_a_module_that_fails() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.import_alone", "chats.models", "chats.no_such_module"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "FAIL chats.no_such_module" in result.stdout and "FAIL chats.models" not in result.stdout
