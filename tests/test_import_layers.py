"""Import arrows point one way: api (and ui, auth, admin, server) -> mirror -> registry ->
storage.

Read from the source with ``ast`` (nothing is imported), following every ``import`` in a
module, function-local and ``TYPE_CHECKING`` ones included, transitively: an arrow that goes
the wrong way through a shared module (the registry recording into ``metrics``, which once
imported ``api.routes``) counts as much as a direct one.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cargohold"

# The HTTP server side and everything that assembles it: the layers above the domain.
ABOVE_DOMAIN = (
    "cargohold.api",
    "cargohold.ui",
    "cargohold.auth",
    "cargohold.admin",
    "cargohold.server",
    "cargohold.cli",
    "cargohold.reload",
)
# Modules every layer uses (the domain and storage record metrics, read config, ...).
SHARED = (
    "cargohold.metrics",
    "cargohold.memory",
    "cargohold.faults",
    "cargohold.errors",
    "cargohold.digest",
    "cargohold.globs",
    "cargohold.mediatypes",
    "cargohold.atomicfile",
    "cargohold.config",
)
DOMAIN_AND_ABOVE = (*ABOVE_DOMAIN, "cargohold.registry", "cargohold.mirror")


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = path.name == "__init__.py"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


MODULES = _modules()


@cache
def _imports(module: str) -> frozenset[str]:
    """The cargohold modules ``module`` imports (importing ``a.b.c`` runs ``a`` and ``a.b``)."""
    path, is_package = MODULES[module]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names += [source] + [f"{source}.{alias.name}" for alias in node.names]
    found = set()
    for name in names:
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & MODULES.keys()
    found.discard(module)
    return frozenset(found)


def _reach(module: str) -> dict[str, str]:
    """Every module ``module`` imports, directly or not, each with the module that imports it."""
    via: dict[str, str] = {}
    stack = [module]
    while stack:
        current = stack.pop()
        for target in _imports(current):
            if target not in via and target != module:
                via[target] = current
                stack.append(target)
    return via


def _chain(via: dict[str, str], start: str, target: str) -> str:
    chain = [target]
    while chain[-1] != start:
        chain.append(via[chain[-1]])
    return " <- ".join(chain)


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _wrong_way(start_prefixes: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    wrong = []
    for module in sorted(MODULES):
        if not _under(module, start_prefixes):
            continue
        via = _reach(module)
        wrong += [_chain(via, module, t) for t in sorted(via) if _under(t, forbidden)]
    return wrong


def test_the_walk_sees_the_arrows_that_exist() -> None:
    """The walk itself works: known arrows in the right direction are found."""
    assert "cargohold.registry.core" in _reach("cargohold.api.app")
    assert "cargohold.storage.driver" in _reach("cargohold.registry.manifests")
    assert "cargohold.api.routes" in _imports("cargohold.api.httpmetrics")
    assert "cargohold.metrics" in _imports("cargohold.registry.manifests")
    assert "cargohold.registry.blobs" in _reach("cargohold.mirror.service")


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        (("cargohold.registry", "cargohold.mirror"), ABOVE_DOMAIN),
        (("cargohold.registry",), ("cargohold.mirror",)),
        (("cargohold.storage",), DOMAIN_AND_ABOVE),
        (SHARED, DOMAIN_AND_ABOVE),
    ],
    ids=["domain", "registry-below-mirror", "storage", "shared"],
)
def test_no_import_points_up(layer: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    assert _wrong_way(layer, forbidden) == []
