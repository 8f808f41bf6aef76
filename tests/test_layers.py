"""Library mode must not depend on the gateway: nothing under ``client/`` imports ``server/``."""

from __future__ import annotations

import ast
from pathlib import Path

import keyrelay

PACKAGE = Path(keyrelay.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_library_mode_imports_nothing_of_the_gateway() -> None:
    modules = sorted((PACKAGE / "client").rglob("*.py"))
    assert modules, "client/ has no modules?"
    offending = {
        str(p.relative_to(PACKAGE)): sorted(n for n in _imports(p) if n.startswith("keyrelay.server"))
        for p in modules
    }
    assert {k: v for k, v in offending.items() if v} == {}
