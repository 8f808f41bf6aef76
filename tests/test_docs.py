"""The docs say no more than the code does: every file a README, a doc page, a docstring or a
comment names exists, and docs/library.md's examples compile and use names keyrelay has."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyrelay

ROOT = Path(__file__).resolve().parents[1]
#: a repository path: dirs/file.ext, or a bare markdown file name; not in a URL, ``~/…`` or a longer path
PATH = re.compile(r"(?<![\w/:.~-])((?:[\w.-]+/)+[\w.-]+\.(?:py|md|toml|sh|txt|json|html|js|css)|[\w-]+\.md)(?![\w/])")
#: the evidence file quotes other projects' paths (``openai/openai-python:src/…``): not ours to check
NOT_OURS = {ROOT / "docs" / "PROVIDER-ERRORS.md"}
#: a path cited from another project: ``owner/repo:path``, ``github.com/…``, ``anthropic-sdk-python tests/…``
OTHER_PROJECT = re.compile(r"([\w.-]+/[\w.-]+[:#]\S*|github\.com/\S*|\b[\w-]+-(?:python|node|typescript|go|sdk|js|java)\b)\s*$")


def _texts() -> Iterator[tuple[Path, str]]:
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if doc not in NOT_OURS:
            yield doc, doc.read_text(encoding="utf-8")
    for folder in ("src", "tests", "examples", "bench"):
        for py in sorted((ROOT / folder).rglob("*.py")):
            source = py.read_text(encoding="utf-8")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    doc = ast.get_docstring(node)
                    if doc:
                        yield py, doc
            yield py, "\n".join(line.split("#", 1)[1] for line in source.splitlines() if "#" in line)


def _named() -> list[tuple[str, str]]:
    """(where, path) for every path named; ``./x`` and ``../x`` are the user's or outside the repo."""
    out = []
    for where, text in _texts():
        for m in PATH.finditer(text):
            name = m.group(1)
            before = text[max(0, m.start() - 60):m.start()].rsplit("\n", 1)[-1]
            if not name.startswith(("./", "../")) and not OTHER_PROJECT.search(before):
                out.append((str(where.relative_to(ROOT)), name))
    return sorted(set(out))


def _exists(where: str, name: str) -> bool:
    bases = [ROOT, ROOT / "src" / "keyrelay", ROOT / "src", ROOT / "tests", ROOT / "docs", (ROOT / where).parent]
    return any((base / name).exists() for base in bases)


def test_the_docs_name_files_at_all() -> None:
    names = {n for _, n in _named()}
    assert {"docs/library.md", "examples/openai_sync.py", "server/app.py"} <= names


@pytest.mark.parametrize(("where", "name"), _named(), ids=lambda v: v)
def test_every_file_named_in_docs_and_docstrings_exists(where: str, name: str) -> None:
    assert _exists(where, name), f"{where} names {name}, which is not in the repository"


def _library_blocks() -> list[str]:
    text = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("block", range(len(_library_blocks())))
def test_library_md_examples_compile_and_use_real_names(block: int) -> None:
    code = _library_blocks()[block]
    tree = ast.parse(code)
    compile(tree, f"docs/library.md block {block}", "exec")
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and getattr(n.value, "id", None) == "keyrelay"}
    assert used, "an example that shows no keyrelay name"
    for name in used:
        assert hasattr(keyrelay, name), f"docs/library.md uses keyrelay.{name}, which does not exist"


def test_library_md_names_every_public_pool_method() -> None:
    text = (ROOT / "docs" / "library.md").read_text(encoding="utf-8")
    public = [m for m in vars(keyrelay.Pool) if not m.startswith("_") and m not in ("asettle",
                                                                                     "check_open")]
    missing = [m for m in public if m not in text]
    assert missing == [], f"docs/library.md does not mention Pool.{missing}"
