"""Pasted keys are checked before they are stored: quotes, env-file lines, joined keys and
too-short values are refused with one line naming where and why; --force stores them anyway;
`keys import` reads env-file lines by taking the value, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyrelay.core.masking import mask

from . import invoke, make_config, new_secret
from .test_errors import one_error_line

KEY = "sk-proj-" + "a1B2c3D4" * 6
OTHER = "sk-proj-" + "z9Y8x7W6" * 6


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return make_config(tmp_path)


def stored(cfg: Path) -> list[str]:
    r = invoke(cfg, "keys", "list", "--json")
    return [k["masked"] for k in json.loads(r.stdout)] if r.exit_code == 0 else []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (f'"{KEY}"', "has quotes around it"),
        (f"'{KEY}'", "has quotes around it"),
        (f"OPENAI_API_KEY={KEY}", "is a NAME=value line (OPENAI_API_KEY=…)"),
        (f"{KEY},{OTHER}", "holds a comma or semicolon"),
        ("ab", "is 2 characters long: too short for an API key"),
    ],
)
def test_keys_add_refuses_what_is_not_one_key(cfg: Path, value: str, why: str) -> None:
    result = invoke(cfg, "keys", "add", "--pool", "openai", new_secret(), value)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith("keyrelay: key 2 of 2 (") and why in line
    assert "nothing added" in line and "--force" in line
    assert KEY not in line and OTHER not in line
    assert stored(cfg) == []
    forced = invoke(cfg, "keys", "add", "--pool", "openai", "--force", value)
    assert forced.exit_code == 0 and stored(cfg) == [mask(value)]


def test_keys_add_from_stdin_names_the_line(cfg: Path) -> None:
    result = invoke(cfg, "keys", "add", "--pool", "openai", "-", input=f"{KEY}\n'{OTHER}'\n")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith("keyrelay: stdin line 2 (") and "has quotes around it" in line


def test_keys_import_takes_the_value_of_env_file_lines_and_says_so(cfg: Path, tmp_path: Path) -> None:
    third = new_secret()
    env = tmp_path / ".env"
    env.write_text(f'# my keys\nOPENAI_API_KEY={KEY}\nexport BACKUP_KEY="{OTHER}"\n{third}\n', encoding="utf-8")
    result = invoke(cfg, "keys", "import", "--pool", "openai", str(env))
    assert result.exit_code == 0, result.stderr
    assert "line 2: took the value of OPENAI_API_KEY=" in result.stdout
    assert "line 3: took the value of BACKUP_KEY=" in result.stdout
    assert "imported 3 keys" in result.stdout
    assert sorted(stored(cfg)) == sorted([mask(KEY), mask(OTHER), mask(third)])
    assert KEY not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "why"),
    [(f"{KEY}\n\"{OTHER}\n", "line 2 ("), (f"{KEY}\nabc\n", "line 2 ("), (f"{KEY},{OTHER}\n", "line 1 (")],
)
def test_keys_import_refuses_suspicious_lines_naming_them(cfg: Path, tmp_path: Path, text: str, why: str) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(text, encoding="utf-8")
    result = invoke(cfg, "keys", "import", "--pool", "openai", str(keys))
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert f"keyrelay: {keys} {why}" in line and "nothing added" in line
    assert stored(cfg) == []
    forced = invoke(cfg, "keys", "import", "--pool", "openai", "--force", str(keys))
    assert forced.exit_code == 0 and len(stored(cfg)) == 2 - text.count(",")


def test_invalid_lines_of_a_key_file_are_one_line(cfg: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{KEY}\nsk-with space-0123456789\nsk-caf\u00e9-0123456789\n", encoding="utf-8")
    result = invoke(cfg, "keys", "import", "--pool", "openai", str(keys))
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "2 invalid lines" in line and "line 2:" in line and "line 3:" in line
