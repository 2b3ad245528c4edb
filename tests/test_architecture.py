"""The house rules (see the design notes): imports flow one way (handlers → services → store), services stay
platform-neutral, and no two modules import each other, directly or round a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "store", "surveys")
SDKS = ("slack_sdk", "slack_bolt", "botbuilder", "botframework", "httpx", "aiohttp")
# Transport, rendering and wiring: the only modules allowed to know a platform or HTTP exists.
EDGE = ("bot.handlers", "bot.channels", "bot.renderers", "bot.simulators", "bot.dialogs")
WIRING = {"bot.server", "bot.desk", "bot.cli", "bot.demo", "bot.teams_package", "bot.config_cli", "bot.outbox_cli",
          "bot.privacy_cli"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module (and ``module.name``) imported anywhere in the file, type-only imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            submodules = {f"{module}.{alias.name}" for alias in node.names}
            found.update(submodules)
            # ``from package import submodule`` needs the submodule, not everything the package re-exports.
            if not all(name in MODULES for name in submodules):
                found.add(module)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps: set[str] = set()
        for imported in _imports(name, path):
            while imported and imported not in MODULES:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                deps.add(imported)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circles() -> None:
    assert _cycles(_graph()) == []


def test_the_circle_finder_sees_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("bot.handlers")))
def test_handlers_ask_services_not_the_store(name: str) -> None:
    store_imports = sorted(i for i in _imports(name, MODULES[name]) if i == "store" or i.startswith("store."))
    assert store_imports == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith(EDGE) and n not in WIRING))
def test_services_know_no_platform_sdk_renderer_or_http_client(name: str) -> None:
    leaks = sorted(i for i in _imports(name, MODULES[name])
                   if i.split(".")[0] in SDKS or i.startswith(("bot.renderers", "bot.channels", "bot.handlers")))
    assert leaks == []


def test_the_store_imports_nothing_of_the_desk() -> None:
    leaks = sorted(f"{name}: {i}" for name, path in MODULES.items() if name.startswith("store")
                   for i in _imports(name, path) if i.split(".")[0] in ("bot", "surveys"))
    assert leaks == []


MAX_FILE_LINES, MAX_CLASS_LINES, MAX_FUNCTION_LINES = 400, 250, 60
SIZE_EXEMPT = {"bot.demo"}  # the demo script plays a whole day in order; reading it top to bottom is the point


def _oversized(name: str, path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    found = [f"{name}: {len(source.splitlines())} lines"] if len(source.splitlines()) > MAX_FILE_LINES else []
    for node in ast.walk(ast.parse(source)):
        length = (node.end_lineno or node.lineno) - node.lineno + 1 if isinstance(node, ast.stmt) else 0
        if isinstance(node, ast.ClassDef) and length > MAX_CLASS_LINES:
            found.append(f"{name}.{node.name}: class of {length} lines")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and length > MAX_FUNCTION_LINES:
            found.append(f"{name}.{node.name}: function of {length} lines")
    return found


def test_no_module_class_or_function_outgrows_one_job() -> None:
    assert [found for name, path in sorted(MODULES.items()) if name not in SIZE_EXEMPT
            for found in _oversized(name, path)] == []


def test_the_size_check_sees_an_oversized_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    (tmp_path / "big.py").write_text(f"def big() -> None:\n{body}\n", encoding="utf-8")
    assert _oversized("big", tmp_path / "big.py") == [f"big.big: function of {MAX_FUNCTION_LINES + 2} lines"]
