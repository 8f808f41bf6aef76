"""The import graph of ``src/keyrelay``: layers import only downwards, no module takes part in an
import cycle, and library mode (``client/``) imports nothing of the gateway (``server/``).

Layers, low → high (a module may import its own layer and those below)::

    core · providers · exceptions, config_paths, coredump, version · http1 · stores
    · config, config_schema, config_ops, migrate · runtime · logs · server, client · cli
    · the package root (__init__, __main__), testing

Module-level imports are checked first. Imports inside functions (deferred, often to keep
start-up light) and under ``TYPE_CHECKING`` are checked by tests of their own: they do not fail
at import time, but they still tie two modules together. Known exceptions are listed below,
each with its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import keyrelay

PACKAGE = Path(keyrelay.__file__).resolve().parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("providers",),
    ("exceptions", "config_paths", "coredump", "version"),
    ("http1",),
    ("stores",),
    ("config", "config_schema", "config_ops", "migrate"),
    ("runtime",),
    ("logs",),
    ("server", "client"),
    ("cli",),
    ("__init__", "__main__", "testing"),
)

# Upward imports allowed on purpose: (importer, imported) → why.
ALLOWED: dict[tuple[str, str], str] = {
    ("keyrelay.cli.demo", "keyrelay.testing.fake_upstream"): "the demo serves the fake upstream keyrelay.testing "
    "ships (testing imports nothing of keyrelay outside itself: test_testing_is_self_contained)",
}

# Known violations in the lead's files, being rewritten (issue 11), each xfailed strictly: once
# fixed, its test fails until the entry goes.
KNOWN: dict[tuple[str, str], str] = {}
KNOWN_CYCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True, slots=True)
class Edge:
    importer: str
    imported: str
    line: int
    kind: str  # "module" | "function" | "type-checking"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The keyrelay module ``name`` names (a module, or a name imported from one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(nodes: list[ast.stmt], kind: str) -> Iterator[tuple[ast.stmt, str]]:
    for node in nodes:
        yield node, kind
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk(node.body, "function")
        elif isinstance(node, ast.ClassDef):
            yield from _walk(node.body, kind)
        elif isinstance(node, ast.If):
            inner = "type-checking" if _is_type_checking(node.test) else kind
            yield from _walk(node.body, inner)
            yield from _walk(node.orelse, kind)
        elif isinstance(node, (ast.Try, ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While)):
            for field in ("body", "orelse", "finalbody"):
                yield from _walk(getattr(node, field, []), kind)
            for handler in getattr(node, "handlers", []):
                yield from _walk(handler.body, kind)


def _edges(module: str, path: Path) -> Iterator[Edge]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node, kind in _walk(ast.parse(path.read_text(encoding="utf-8")).body, "module"):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            resolved = _resolve(target) if target.startswith("keyrelay") else None
            if resolved is not None and resolved != module:
                yield Edge(module, resolved, node.lineno, kind)


EDGES: list[Edge] = [e for m, p in MODULES.items() for e in _edges(m, p)]


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _upward(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if _layer(e.imported) > _layer(e.importer)]


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        graph[e.importer].add(e.imported)
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

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return found


def _show(edges: list[Edge]) -> list[str]:
    return sorted({f"{e.importer}:{e.line} imports {e.imported} ({e.kind})" for e in edges})


def test_every_module_is_in_a_layer() -> None:
    assert len(MODULES) > 50
    for m in MODULES:
        _layer(m)


def test_the_graph_sees_imports_of_every_kind() -> None:
    """The checks below cannot pass for want of edges: the graph holds the imports known to exist."""
    kinds = {(e.importer, e.imported): e.kind for e in EDGES}
    assert kinds[("keyrelay.config", "keyrelay.config_ops")] == "module"
    assert kinds[("keyrelay.stores.memory", "keyrelay.stores.base")] == "module"
    assert ("keyrelay.cli.main", "keyrelay.coredump") in kinds
    assert {e.kind for e in EDGES} == {"module", "function", "type-checking"}
    assert len(EDGES) > 300


def test_the_checks_find_a_cycle_and_an_upward_import() -> None:
    fake = [Edge("keyrelay.core.model", "keyrelay.runtime.pool", 1, "module"),
            Edge("keyrelay.runtime.pool", "keyrelay.core.model", 1, "module")]
    assert _cycles(fake) == [["keyrelay.core.model", "keyrelay.runtime.pool"]]
    assert _upward(fake) == fake[:1]


def test_no_module_level_import_cycle() -> None:
    assert _cycles([e for e in EDGES if e.kind == "module"]) == []


def test_no_import_cycle_even_counting_deferred_imports() -> None:
    """Imports inside functions and under TYPE_CHECKING do not fail at import time, but a cycle
    through them is still two modules that each need the other."""
    assert [c for c in _cycles(EDGES) if frozenset(c) not in KNOWN_CYCLES] == []


@pytest.mark.parametrize("cycle", sorted(sorted(c) for c in KNOWN_CYCLES) or [pytest.param(None, marks=pytest.mark.skip("none known"))])
def test_known_cycles_are_still_there(cycle: list[str] | None) -> None:
    assert cycle is not None
    if frozenset(cycle) in {frozenset(c) for c in _cycles(EDGES)}:
        pytest.xfail(KNOWN_CYCLES[frozenset(cycle)])
    raise AssertionError(f"{cycle} is no longer a cycle: remove it from KNOWN_CYCLES")


def test_no_module_level_import_from_a_lower_layer_to_a_higher_one() -> None:
    bad = [e for e in _upward(EDGES) if e.kind == "module" and (e.importer, e.imported) not in KNOWN | ALLOWED]
    assert _show(bad) == []


def test_no_deferred_import_from_a_lower_layer_to_a_higher_one() -> None:
    bad = [e for e in _upward(EDGES) if e.kind != "module" and (e.importer, e.imported) not in KNOWN | ALLOWED]
    assert _show(bad) == []


@pytest.mark.parametrize("pair", sorted(KNOWN) or [pytest.param(None, marks=pytest.mark.skip("none known"))])
def test_known_violations_are_still_there(pair: tuple[str, str] | None) -> None:
    assert pair is not None
    if any((e.importer, e.imported) == pair for e in _upward(EDGES)):
        pytest.xfail(KNOWN[pair])
    raise AssertionError(f"{pair} no longer imports upwards: remove it from KNOWN")


def test_library_mode_imports_nothing_of_the_gateway() -> None:
    modules = [m for m in MODULES if m.startswith("keyrelay.client")]
    assert modules, "client/ has no modules?"
    offending = [e for e in EDGES if e.importer in modules and e.imported.startswith("keyrelay.server")]
    assert _show(offending) == []


def test_testing_is_self_contained() -> None:
    """``keyrelay.testing`` (the fake upstream) imports nothing else of keyrelay, so the CLI's demo
    may serve it without pulling the top layer in."""
    inside = [m for m in MODULES if m.startswith("keyrelay.testing")]
    assert _show([e for e in EDGES if e.importer in inside and not e.imported.startswith("keyrelay.testing")]) == []


def test_core_and_providers_import_nothing_above_them() -> None:
    """The pure layers, named: core/ imports only core/, providers/ only core/ and providers/."""
    for e in EDGES:
        if e.importer.startswith("keyrelay.core"):
            assert e.imported.startswith("keyrelay.core"), e
        elif e.importer.startswith("keyrelay.providers"):
            assert e.imported.startswith(("keyrelay.core", "keyrelay.providers")), e
