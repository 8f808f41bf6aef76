"""The admin API of `keyrelay serve --workers 2`: a session cookie made by one worker is accepted by
every worker (each request below comes on a new connection, so the kernel spreads them over both),
writes reach the CLI, and usage holds the traffic of both workers."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from keyrelay.testing.fake_upstream import Behavior

from .conftest import cli, free_port, write_config
from .test_workers import start_workers, wait_for

KEYS = [f"sk-workers-admin-{i:04d}-abcdefghijkl" for i in range(3)]
API = "/admin/api/v1"


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None, r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


def test_a_session_works_on_every_worker_and_usage_sums_them(tmp_path: Path, upstream_factory: Any) -> None:
    up = upstream_factory({k: Behavior.OK for k in KEYS})
    port = free_port()
    config = write_config(tmp_path, up.url, port)
    config.write_text(config.read_text().replace("[store]", "workers = 2\n[store]"))
    assert cli(config, "keys", "add", "--pool", "openai", *KEYS).returncode == 0
    admin = cli(config, "tokens", "create", "ops", "--admin").stdout.strip().splitlines()[-1]
    client = cli(config, "tokens", "create", "app", "--pool", "openai").stdout.strip().splitlines()[-1]
    log = tmp_path / "gateway.log"
    proc = start_workers(config, log)
    try:
        wait_for(lambda: "2 workers serving" in log.read_text(), 30, "the workers did not start")
        base = f"http://127.0.0.1:{port}"
        status, who, headers = call(base + API + "/session", "POST", {"token": admin})
        assert status == 200, who
        cookie = headers["Set-Cookie"].split(";")[0]
        jar = {"Cookie": cookie}
        answers = [call(base + API + "/session", headers=jar)[:2] for _ in range(30)]
        assert answers == [(200, who)] * 30
        status, keys, _ = call(base + API + "/keys", headers=jar)
        kid = keys["data"][0]["id"]
        assert call(base + API + f"/keys/{kid}/disable", "POST", headers=jar)[0] == 403  # no CSRF header
        status, key, _ = call(base + API + f"/keys/{kid}/disable", "POST", headers={**jar, "X-CSRF-Token": who["csrf"]})
        assert status == 200 and key["state"] == "disabled"
        listed = json.loads(cli(config, "keys", "list", "--json").stdout)
        assert {k["id"]: k["state"] for k in listed}[kid] == "disabled"
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(40):
            assert call(base + "/v1/chat/completions", "POST", chat, {"Authorization": f"Bearer {client}"})[0] == 200
        assert call(base + "/v1/models", headers={"Authorization": f"Bearer {admin}"})[0] == 401  # not a client

        def counted() -> int:
            _, usage, _ = call(base + API + "/usage?pool=openai", headers={"Authorization": f"Bearer {admin}"})
            return sum(b["requests"] for b in usage["buckets"])

        wait_for(lambda: counted() == 40, 15, "usage of both workers not summed")
        time.sleep(0.5)
        assert counted() == 40
    finally:
        proc.terminate()
        proc.wait(15)
