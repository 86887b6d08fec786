"""The architecture rules of issue 12, checked on the source: no module outside a family's folder
imports the family (the rest of fvjax reaches it through the registry), and no import cycles between
fvjax's modules (package __init__ files included) at import time."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import jax
import pytest

from fvjax.models.platform import mesh_platform, target_platform
from fvjax.sharding.logical import use_rules
from fvjax.sharding.mesh import MeshPlan, make_mesh

PACKAGE = Path(__file__).resolve().parents[1] / "fvjax"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(node: ast.AST, module: str, is_package: bool) -> set[str]:
    """fvjax modules (and their parent packages, which Python runs first) a top-level import statement loads."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[:len(anchor) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        names = {base} | {f"{base}.{alias.name}" for alias in node.names}
    out = set()
    for name in names:
        parts = name.split(".")
        for i in range(2, len(parts) + 1):   # fvjax itself (lazy __init__) is not an edge
            if ".".join(parts[:i]) in MODULES:
                out.add(".".join(parts[:i]))
    return out


def _top_level_imports(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    nodes = list(tree.body)
    while nodes:   # top-level statements, including those inside top-level if/try blocks
        node = nodes.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= _imported(node, module, path.name == "__init__.py")
        elif isinstance(node, (ast.If, ast.Try)):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            nodes.extend(node.body + node.orelse + getattr(node, "finalbody", []) +
                         [h for handler in getattr(node, "handlers", []) for h in handler.body])
    # A module's own enclosing packages are already being imported when it runs: not an edge.
    return {m for m in found if m != module and not module.startswith(m + ".")}


def test_no_import_cycles():
    graph = {m: _top_level_imports(m) for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_only_a_family_imports_its_own_code():
    pattern = re.compile(r"families\.wan|families import wan")
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
                 for path in PACKAGE.rglob("*.py") if "families" not in path.relative_to(PACKAGE).parts[:1]
                 for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_kernels_follow_the_mesh_platform_not_the_host():
    devices = jax.devices()[:2]
    mesh = make_mesh(MeshPlan(replica=1, fsdp=2, sp=1, tp=1, hsdp_shard_dim=2), devices)
    assert mesh_platform(mesh) == devices[0].platform == "cpu"
    assert mesh_platform(MeshPlan(1, 2, 1, 1, 2).abstract_mesh()) is None   # no devices: no platform
    assert target_platform() == jax.default_backend()
    with use_rules(mesh, ()):
        assert target_platform() == "cpu"
