"""The floors of the house, checked: which package may import which, no import circle, no private
name imported from another module. (README, "Architecture".)

Runtime imports count; imports under ``if TYPE_CHECKING:`` only name types for annotations.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "mcp_fast"

# Each floor, and the floors it may import (its own is always allowed).
FLOORS: dict[str, set[str]] = {
    "wire": set(),  # sans-I/O HTTP/1.1, HTTP/2, SSE and line framing: nothing of ours
    "protocol": set(),  # JSON-RPC, versions, the 2026 envelope, spec constants: nothing of ours
    "bounded": set(),
    "net": {"wire"},  # the event loop: connections, flow control
    "fleet": {"protocol", "bounded"},  # what instances share
    "api": {"protocol", "bounded"},  # MCPServer, Call, Context, results, routes
    "dispatch": {"api", "protocol", "bounded", "fleet"},  # the method table, tasks, lists
    "pipeline": {"dispatch", "api", "protocol", "bounded", "fleet"},  # one request, any transport
    "transport": {"pipeline", "api", "protocol", "wire", "bounded", "fleet"},  # framing and HTTP rules
    "ops": {"api", "protocol", "bounded", "fleet"},  # built-in routes and middleware for production
    "top": {"wire", "protocol", "bounded", "net", "fleet", "api", "dispatch", "pipeline", "transport", "ops"},
}
API_MODULES = {"call", "context", "content", "schema", "registry", "results", "routes", "server"}
TOP_MODULES = {
    "app", "config", "checks", "loading", "healthcheck", "__main__", "testing", "demo", "__init__", "production",
}


def floor_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "mcp_fast", module
    if len(parts) == 1:
        return "top"
    head = parts[1]
    if head in FLOORS:
        return head
    if head in API_MODULES:
        return "api"
    if head in TOP_MODULES:
        return "top"
    raise AssertionError(f"{module} belongs to no floor: add it to tests/test_architecture.py")


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of each import that runs when the module loads."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, list[str], int]] = []
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.extend((alias.name, [], node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    prefix = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{prefix}.{base}" if base else prefix
                found.append((base, [alias.name for alias in node.names], node.lineno))
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.AST):
                    visit([n for n in inner if isinstance(n, ast.stmt)] or [s for h in inner for s in getattr(h, "body", [])])

    visit(tree.body)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def our_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def resolve(imported: str, names: list[str], modules: dict[str, Path]) -> list[str]:
    """The modules of ours an import statement loads (``from pkg import module`` names modules too)."""
    if not imported.startswith("mcp_fast"):
        return []
    targets = [imported] if imported in modules else []
    targets += [f"{imported}.{name}" for name in names if f"{imported}.{name}" in modules]
    return targets or [imported.rsplit(".", 1)[0]]


def test_every_module_imports_only_from_its_floor_and_below() -> None:
    modules = our_modules()
    wrong: list[str] = []
    for module, path in modules.items():
        floor = floor_of(module)
        allowed = FLOORS[floor] | {floor}
        for imported, names, line in runtime_imports(path):
            for target in resolve(imported, names, modules):
                if floor_of(target) not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {floor} imports {target} ({floor_of(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle() -> None:
    modules = our_modules()
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        for imported, names, _ in runtime_imports(path):
            for target in resolve(imported, names, modules):
                if target in modules and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    # Packages import their modules in __init__: an edge module -> its own package is a parent import.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                walk(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_private_name_is_imported_from_another_module() -> None:
    modules = our_modules()
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {imported}.{name}"
        for module, path in modules.items()
        for imported, names, line in runtime_imports(path)
        if imported.startswith("mcp_fast")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_readme_architecture_names_every_module() -> None:
    """The README's folder list matches the tree: every module is named, nothing else is."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Architecture", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"[\w/]+\.py", block))
    files = {path.name for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"}
    missing = sorted(files - {name.rsplit("/", 1)[-1] for name in named})
    assert not missing, f"modules the README's Architecture section does not name: {missing}"
    stale = sorted(name for name in named if name.rsplit("/", 1)[-1] not in files and not (ROOT / name).exists())
    assert not stale, f"the README names modules that do not exist: {stale}"


def test_a_default_server_loads_no_optional_library() -> None:
    """Idle memory: a server built with default flags imports none of what only some
    configurations need (pyjwt and cryptography: bearer tokens and RS256/ES256 sessions;
    OpenTelemetry: an app that installed a tracer provider; redis: --redis; urllib: a JWKS URL;
    the HTTP/2 layer and hpack: the first HTTP/2 connection)."""
    script = (
        "import sys\n"
        "from mcp_fast.app import build_http_server\n"
        "from mcp_fast.config import load_config\n"
        "from mcp_fast.demo import server\n"
        "build_http_server(server, load_config([], {}))\n"
        "heavy = ('jwt', 'cryptography', 'opentelemetry', 'redis', 'urllib.request', 'prometheus_client',\n"
        "         'hpack', 'mcp_fast.wire.h2', 'mcp_fast.net.h2connection')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
