"""The import graph of our packages: no cycles, and content_service's layers hold.

Read from the source with ast (nothing is imported), so a new cycle or a forbidden import fails
here with the modules named, before it shows up as an ImportError at some start-up."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("content_service", "vector_service", "image_worker", "servicekit", "loom_backup")

# content_service's resources: plain modules over a session (the domain layer).
RESOURCES = {
    f"content_service.{name}"
    for name in (
        "chat",
        "clone",
        "navigation",
        "pages",
        "posts",
        "search",
        "site_settings",
        "tenancy",
        "images.leases",
        "images.media",
        "images.records",
        "images.urls",
    )
}
# What the domain layer shares (scope checks, content validation).
KERNEL = {"content_service.scope", "content_service.validation"}
# The gRPC edge: generated code and grpc itself.
EDGE_PREFIXES = ("grpc", "loom.", "google.protobuf", "google.rpc")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _graph() -> dict[str, set[str]]:
    """module -> every module it imports (absolute names; `from a import b` counts a and, when
    b is a module, a.b)."""
    sources = {
        _module_name(path): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations/versions" not in path.as_posix()
    }
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        is_package = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    if not is_package:
                        base = base[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    assert node.module is not None
                    module = node.module
                deps.add(module)
                deps.update(f"{module}.{alias.name}" for alias in node.names)
        graph[name] = {d for d in deps if d in sources or not d.startswith(PACKAGES)}
    return graph


def _ours(graph: dict[str, set[str]], module: str) -> set[str]:
    return {d for d in graph[module] if d in graph and d != module}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(_ours(graph, start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(_ours(graph, child)))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _violations(modules: set[str], forbidden: Callable[[str, str], bool]) -> list[str]:
    graph = _graph()
    return sorted(
        f"{module} imports {dep}"
        for module in modules
        for dep in graph[module]
        if forbidden(module, dep)
    )


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert set(graph) >= RESOURCES | KERNEL, "a module named in this test is gone: update it"
    assert "content_service.indexing" in _ours(graph, "content_service.pages")


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_checker_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_domain_never_imports_grpc_or_generated_code_or_the_api() -> None:
    def forbidden(module: str, dep: str) -> bool:
        return dep.startswith(EDGE_PREFIXES) or dep.startswith(
            ("content_service.api", "content_service.server")
        )

    assert _violations(RESOURCES | KERNEL, forbidden) == []


def test_the_media_http_server_speaks_http_only() -> None:
    """images/http.py (werkzeug + cheroot) serves stored media beside gRPC, not through it."""

    def forbidden(module: str, dep: str) -> bool:
        return dep.startswith(EDGE_PREFIXES) or dep.startswith(
            ("content_service.api", "content_service.server", "servicekit.server")
        )

    assert _violations({"content_service.images.http"}, forbidden) == []


def test_resources_reach_indexing_through_its_hooks_only() -> None:
    def forbidden(module: str, dep: str) -> bool:
        return dep.startswith("content_service.indexing.")

    assert _violations(RESOURCES | KERNEL, forbidden) == []


def test_indexing_never_imports_a_resource_or_the_api() -> None:
    indexing = {m for m in _graph() if m.startswith("content_service.indexing")}

    def forbidden(module: str, dep: str) -> bool:
        return dep in RESOURCES or dep.startswith(
            ("content_service.api", "content_service.server", "content_service.images")
        )

    assert _violations(indexing, forbidden) == []


def test_db_layer_imports_nothing_above_it() -> None:
    db = {m for m in _graph() if m.startswith("content_service.db")}

    def forbidden(module: str, dep: str) -> bool:
        return dep.startswith("content_service.") and not dep.startswith("content_service.db")

    assert _violations(db, forbidden) == []


@pytest.mark.parametrize("package", ["content_service", "vector_service"])
def test_only_the_entry_point_imports_the_server(package: str) -> None:
    server = f"{package}.server"

    def forbidden(module: str, dep: str) -> bool:
        # The commands that run a server: its own __main__, and loom_backup (reconcile starts
        # both servers on a restored copy).
        entry = module in (f"{package}.__main__", server) or module.startswith("loom_backup.")
        return dep == server and not entry

    assert _violations(set(_graph()), forbidden) == []
