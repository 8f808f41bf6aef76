"""Keys at rest through the real commands: `keyrelay keys add` creates a 0600 key file and names
its path (never its content), `keyrelay serve` runs without core dumps and serves the keys it
decrypted, no store file holds a key, and `keyrelay keys rotate-secret` keeps every key."""

from __future__ import annotations

import json
import stat
import urllib.request
from pathlib import Path
from typing import Any

from keyrelay.testing.fake_upstream import Behavior

from .conftest import cli, free_port, write_config

KEYS = ["sk-rest-" + "a1" * 16, "0f" * 16, "AIzaSyREST_" + "b-2" * 9]


def store_bytes(tmp: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp.glob("keyrelay.db*") if not p.name.endswith(".key"))


def ask(url: str, token: str) -> int:
    req = urllib.request.Request(
        f"{url}/v1/chat/completions", data=json.dumps({"model": "m", "messages": []}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def test_keys_are_encrypted_served_and_rotated_and_serve_has_no_core_dumps(
    tmp_path: Path, upstream_factory: Any, server_factory: Any
) -> None:
    up = upstream_factory({k: Behavior.OK for k in KEYS})
    port = free_port()
    config = write_config(tmp_path, up.url, port)
    key_file = tmp_path / "keyrelay.db.key"

    added = cli(config, "keys", "add", "--pool", "openai", *KEYS)
    assert added.returncode == 0, added.stderr
    assert f"created the key file {key_file}" in added.stderr
    assert key_file.read_text().strip() not in added.stdout + added.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not any(k.encode() in store_bytes(tmp_path) for k in KEYS)
    again = cli(config, "keys", "list")
    assert "created the key file" not in again.stderr
    token = cli(config, "tokens", "create", "t", "--pool", "openai").stdout.strip().splitlines()[-1]

    server = server_factory(config, port)
    assert server.proc is not None
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core
    for _ in range(6):
        assert ask(server.url, token) == 200
    assert {c.key for c in up.fake.calls} <= set(KEYS) and len({c.key for c in up.fake.calls}) >= 2
    server.stop()

    old_secret = key_file.read_text()
    rotated = cli(config, "keys", "rotate-secret")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 3 keys" in rotated.stdout
    assert key_file.read_text() != old_secret and not Path(f"{key_file}.new").exists()
    listed = json.loads(cli(config, "keys", "list", "--json").stdout)
    assert len(listed) == 3 and all(k["state"] == "active" for k in listed)
    assert not any(k.encode() in store_bytes(tmp_path) for k in KEYS)
