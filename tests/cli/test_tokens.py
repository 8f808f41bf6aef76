"""``keyrelay tokens …``: the token is shown once, only its hash is stored."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from keyrelay.stores.base import TokenRecord, hash_token
from keyrelay.stores.sqlite import SQLiteStore

from . import db_bytes, invoke, make_config, with_db


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return make_config(tmp_path)


def find(tmp_path: Path, token: str) -> TokenRecord | None:
    async def work(store: SQLiteStore) -> TokenRecord | None:
        return await store.find_token(hash_token(token))

    return with_db(tmp_path, work)


def create(cfg: Path, *args: str) -> str:
    result = invoke(cfg, "tokens", "create", *args)
    assert result.exit_code == 0, result.output
    *explanation, token = result.stdout.splitlines()
    assert explanation, "an explanatory line comes before the token"
    assert result.stdout.endswith(token + "\n")
    return token


def test_create_prints_the_token_alone_on_the_last_line_and_stores_only_its_hash(cfg: Path, tmp_path: Path) -> None:
    token = create(cfg, "ci", "--pool", "openai", "--pool", "groq")
    assert re.fullmatch(r"kr-[A-Za-z0-9_-]{43}", token)
    rec = find(tmp_path, token)
    assert rec is not None and rec.name == "ci" and rec.pools == ("openai", "groq")
    assert rec.token_hash == hash_token(token)
    raw = db_bytes(tmp_path)
    assert hash_token(token).encode() in raw
    assert token.encode() not in raw and token[3:].encode() not in raw


def test_list_shows_tokens_without_hashes(cfg: Path) -> None:
    token = create(cfg, "ci", "--pool", "openai")
    create(cfg, "dashboard", "--all-pools")
    result = invoke(cfg, "tokens", "list", "--json")
    assert result.exit_code == 0
    assert hash_token(token) not in result.stdout and token not in result.stdout
    toks = json.loads(result.stdout)
    assert [(t["name"], t["pools"], t["revoked"]) for t in toks] == [
        ("ci", ["openai"], False),
        ("dashboard", ["*"], False),
    ]
    assert all(set(t) >= {"name", "id", "pools", "created", "revoked"} for t in toks)
    table = invoke(cfg, "tokens", "list")
    assert table.exit_code == 0 and "dashboard" in table.stdout and hash_token(token) not in table.stdout


def test_revoke_by_name_or_id(cfg: Path, tmp_path: Path) -> None:
    first = create(cfg, "ci", "--pool", "openai")
    second = create(cfg, "batch", "--pool", "groq")
    result = invoke(cfg, "tokens", "revoke", "ci")
    assert result.exit_code == 0 and "revoked token 'ci'" in result.stdout
    assert find(tmp_path, first) is None
    rec = find(tmp_path, second)
    assert rec is not None
    assert invoke(cfg, "tokens", "revoke", rec.id).exit_code == 0
    assert find(tmp_path, second) is None
    toks = json.loads(invoke(cfg, "tokens", "list", "--json").stdout)
    assert all(t["revoked"] and t["revoked_at"] for t in toks)
    again = invoke(cfg, "tokens", "revoke", "ci")
    assert again.exit_code == 2 and "no live token" in again.stderr


def test_revoke_given_the_token_itself(cfg: Path, tmp_path: Path) -> None:
    token = create(cfg, "leaked", "--pool", "openai")
    result = invoke(cfg, "tokens", "revoke", token)
    assert result.exit_code == 0 and "revoked token 'leaked'" in result.stdout
    assert find(tmp_path, token) is None
    again = invoke(cfg, "tokens", "revoke", token)
    assert again.exit_code == 2 and token not in again.output


def test_a_live_name_cannot_be_reused_until_revoked(cfg: Path, tmp_path: Path) -> None:
    create(cfg, "ci", "--pool", "openai")
    dup = invoke(cfg, "tokens", "create", "ci", "--pool", "openai")
    assert dup.exit_code == 2
    assert "'ci'" in dup.stderr and dup.stdout == ""
    assert invoke(cfg, "tokens", "revoke", "ci").exit_code == 0
    assert find(tmp_path, create(cfg, "ci", "--pool", "groq")) is not None


def test_an_unknown_pool_is_refused(cfg: Path, tmp_path: Path) -> None:
    result = invoke(cfg, "tokens", "create", "ci", "--pool", "openai", "--pool", "mistral")
    assert result.exit_code == 2
    assert "'mistral'" in result.stderr and "openai, groq" in result.stderr
    assert result.stdout == ""
    listing = invoke(cfg, "tokens", "list", "--json")  # nothing written: not even an empty store
    assert listing.exit_code == 2 and listing.stderr.startswith("keyrelay: no store at ")


@pytest.mark.parametrize("args", [(), ("--all-pools", "--pool", "openai")])
def test_pools_are_given_one_way(cfg: Path, args: tuple[str, ...]) -> None:
    result = invoke(cfg, "tokens", "create", "ci", *args)
    assert result.exit_code == 2
    assert "--pool" in result.stderr


def test_an_admin_token_is_created_once_stored_hashed_and_listed_as_admin(cfg: Path, tmp_path: Path) -> None:
    token = create(cfg, "ops", "--admin")
    rec = find(tmp_path, token)
    assert rec is not None and rec.admin and rec.pools == ()
    assert token.encode() not in db_bytes(tmp_path)
    create(cfg, "app", "--pool", "openai")
    listed = json.loads(invoke(cfg, "tokens", "list", "--json").stdout)
    assert [(t["name"], t["admin"]) for t in listed] == [("ops", True), ("app", False)]
    table = invoke(cfg, "tokens", "list").stdout
    (ops_line,) = [line for line in table.splitlines() if line.startswith("ops")]
    assert "admin" in ops_line
    assert invoke(cfg, "tokens", "revoke", "ops").exit_code == 0
    assert find(tmp_path, token) is None


def test_an_admin_token_takes_no_pool(cfg: Path) -> None:
    result = invoke(cfg, "tokens", "create", "ops", "--admin", "--pool", "openai")
    assert result.exit_code == 2 and "--admin alone" in result.stderr
