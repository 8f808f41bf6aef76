"""``keyrelay keys rotate-secret`` and the secret of keys at rest as the CLI shows it."""

from __future__ import annotations

import json
from pathlib import Path

from keyrelay.stores.crypto import new_secret

from . import db_bytes, invoke, make_config
from . import new_secret as new_key


def listed(cfg: Path, env: dict[str, str] | None = None) -> list[str]:
    result = invoke(cfg, "keys", "list", "--json", env=env)
    assert result.exit_code == 0, result.output
    return [k["masked"] for k in json.loads(result.stdout)]


def test_rotating_a_key_file_secret_keeps_every_key(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    keys = [new_key(), new_key("")]
    first = invoke(cfg, "keys", "add", "--pool", "openai", *keys)
    assert first.exit_code == 0
    key_file = tmp_path / "k.db.key"
    assert f"created the key file {key_file}" in first.stderr
    before, old = listed(cfg), key_file.read_text()

    result = invoke(cfg, "keys", "rotate-secret")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("re-encrypted 2 keys under the new secret (fingerprint ")
    assert f"the key file {key_file} now holds the new secret" in result.stdout
    assert key_file.read_text() != old and listed(cfg) == before
    assert old.strip() not in result.output and key_file.read_text().strip() not in result.output
    assert not any(k.encode() in db_bytes(tmp_path) for k in keys)


def test_rotating_an_environment_secret_needs_the_new_one_and_then_only_it_opens_the_store(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    old, new = new_secret(), new_secret()
    assert invoke(cfg, "keys", "add", "--pool", "openai", new_key(), env={"KEYRELAY_SECRET_KEY": old}).exit_code == 0
    assert not (tmp_path / "k.db.key").exists()

    missing = invoke(cfg, "keys", "rotate-secret", env={"KEYRELAY_SECRET_KEY": old})
    assert missing.exit_code == 2 and "KEYRELAY_NEW_SECRET_KEY" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    done = invoke(cfg, "keys", "rotate-secret", env={"KEYRELAY_SECRET_KEY": old, "KEYRELAY_NEW_SECRET_KEY": new})
    assert done.exit_code == 0, done.output
    assert "set KEYRELAY_SECRET_KEY to the value of KEYRELAY_NEW_SECRET_KEY" in done.stdout

    refused = invoke(cfg, "keys", "list", env={"KEYRELAY_SECRET_KEY": old})
    assert refused.exit_code == 2 and "encrypted with another secret" in refused.stderr
    assert old not in refused.output and new not in refused.output
    assert len(listed(cfg, {"KEYRELAY_SECRET_KEY": new})) == 1


def test_a_memory_store_has_no_secret_to_rotate(tmp_path: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text('[store]\nurl = "memory://"\n[[pools]]\nname = "openai"\n')
    result = invoke(cfg, "keys", "rotate-secret")
    assert result.exit_code == 2 and "memory://" in result.stderr
