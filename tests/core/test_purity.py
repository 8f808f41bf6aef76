"""core/ and providers/ are pure: no I/O, no clock, no global randomness (DESIGN §3 rule 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import keyrelay

PACKAGE = Path(keyrelay.__file__).parent
PURE_DIRS = ("core", "providers")
FORBIDDEN = frozenset(
    {
        "asyncio",
        "aiohttp",
        "httpx",
        "httpx2",
        "redis",
        "sqlite3",
        "socket",
        "logging",
        "time",
        "os",
        "random",
        "threading",
        "subprocess",
    }
)
#: ``import random as _random_type`` may name the generator's type; nothing may draw from it.
TYPE_ONLY_ALIAS = "_random_type"

PURE_FILES = sorted(p for d in PURE_DIRS for p in (PACKAGE / d).rglob("*.py"))


def test_the_pure_packages_are_found() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in PURE_FILES}
    assert {"core/machine.py", "core/pool.py", "core/selection.py", "providers/openai.py"} <= names


def forbidden_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN and not (alias.name == "random" and alias.asname == TYPE_ONLY_ALIAS):
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN:
                found.append(f"line {node.lineno}: from {node.module} import …")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append(f"line {node.lineno}: __import__(…)")
    return found


def type_alias_misuse(tree: ast.AST) -> list[str]:
    """The type-only alias may appear only as ``_random_type.Random``, and that never called."""
    allowed: set[int] = set()
    called: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == TYPE_ONLY_ALIAS
            and node.attr == "Random"
        ):
            allowed.add(id(node.value))
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == TYPE_ONLY_ALIAS:
                called.append(f"line {node.lineno}: {TYPE_ONLY_ALIAS}.{f.attr}(…) is called")
    misuse = [
        f"line {n.lineno}: {TYPE_ONLY_ALIAS} used other than as {TYPE_ONLY_ALIAS}.Random"
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id == TYPE_ONLY_ALIAS and id(n) not in allowed
    ]
    return called + misuse


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_pure_modules_import_no_io_clock_or_global_random(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    problems = forbidden_imports(tree) + type_alias_misuse(tree)

    assert not problems, f"{path.relative_to(PACKAGE)} is not pure:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("import time", True),
        ("import os.path", True),
        ("from time import monotonic", True),
        ("from asyncio import sleep", True),
        ("import random", True),
        ("import random as rnd", True),
        ("from random import Random", True),
        ("import logging.handlers", True),
        ("import random as _random_type\nx = _random_type.random()", True),
        ("import random as _random_type\nr = _random_type\n", True),
        ("import random as _random_type\nRng = _random_type.Random", False),
        ("import heapq\nimport re\nfrom dataclasses import dataclass", False),
        ("from . import time", False),  # a sibling module, not the stdlib
    ],
)
def test_the_purity_check_tells_pure_from_impure(source: str, bad: bool) -> None:
    tree = ast.parse(source)
    assert bool(forbidden_imports(tree) + type_alias_misuse(tree)) == bad
