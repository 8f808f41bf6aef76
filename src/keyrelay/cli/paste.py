"""Sanity checks on pasted keys: what people paste is often not quite a key.

A key is stored exactly as given, so a pasted ``"sk-…"`` (quotes and all), an env-file line
``OPENAI_API_KEY=sk-…``, two keys joined by a comma or a 2-character typo would be stored and
then fail upstream as "invalid". :func:`suspicion` names the problem; ``keys add`` and ``keys
import`` refuse such values with one line naming where and why, unless ``--force``. ``keys
import`` reads env-file lines (``NAME=value``, ``export NAME=value``) by taking the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from keyrelay.cli.common import SHOWN, CliError, parse_key_lines, plural, read_bytes

__all__ = ["MIN_LENGTH", "check_pasted", "read_key_file", "suspicion"]

#: shorter than this is no API key any provider issues (OpenAI's are 51+, the shortest seen ~20)
MIN_LENGTH = 8
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")


def suspicion(value: str) -> str | None:
    """Why ``value`` looks like something other than one key, or ``None``."""
    if value[:1] in _QUOTES or value[-1:] in _QUOTES:
        return "has quotes around it (pasted from code?); give the key without them"
    if _ASSIGNMENT.match(value):
        name = value.split("=", 1)[0]
        return f"is a NAME=value line ({name}=…); give the value only"
    if "," in value or ";" in value:
        return "holds a comma or semicolon: several keys joined? give them one by one"
    if len(value) < MIN_LENGTH:
        return f"is {len(value)} characters long: too short for an API key"
    return None


def check_pasted(items: Iterable[tuple[str, str]], force: bool) -> None:
    """Refuse the first suspicious ``(where, value)`` with one line (exit 2), unless ``force``."""
    if force:
        return
    bad = [(where, why) for where, value in items if (why := suspicion(value)) is not None]
    if bad:
        where, why = bad[0]
        more = f" ({plural(len(bad) - 1, 'more suspicious value')})" if len(bad) > 1 else ""
        raise CliError(f"{where} {why}{more}; nothing added (--force stores it as given)")


def _env_value(line: str) -> tuple[str, str] | None:
    """``(NAME, value)`` of an env-file line, the value unquoted; ``None`` for anything else."""
    m = _ENV_LINE.match(line)
    if m is None:
        return None
    name, value = m.group(1), m.group(2)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return name, value


def read_key_file(file: str) -> tuple[list[tuple[int, str]], list[str]]:
    """``(line number, key)`` of a key file (``-``: stdin) and notes for the env-file lines read
    as their value. Lines that are no key fail the command (one line, exit 2)."""
    name = "stdin" if file == "-" else file
    data = read_bytes(file)
    lines: list[bytes | str] = []
    taken: list[tuple[int, str]] = []
    for n, raw in enumerate(data.splitlines(), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            lines.append(raw)
            continue
        env = _env_value(text.lstrip("\ufeff") if n == 1 else text)
        if env is not None and env[1]:
            taken.append((n, env[0]))
            lines.append(env[1])
        else:
            lines.append(text)
    found, problems = parse_key_lines(lines)
    if problems:  # one line however many: "2 invalid lines in keys.txt: line 4: …; line 6: …; nothing added"
        listed = "; ".join(f"line {n}: {msg}" for n, msg in problems[:SHOWN])
        more = f"; … and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise CliError(f"{plural(len(problems), 'invalid line')} in {name}: {listed}{more}; nothing added")
    notes = [f"  line {n}: took the value of {var}=" for n, var in taken]
    return found, notes
