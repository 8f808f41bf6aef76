"""``keyrelay check`` against upstreams that echo the key they were sent, or answer 200 with a
page that is not the JSON a probe expects: no key (nor any 8-character piece of one) reaches
the CLI's output, the events or the store's files, and an unreadable 2xx changes no state."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web
from click.testing import CliRunner, Result

from keyrelay.cli.main import cli
from keyrelay.core.masking import mask
from keyrelay.core.model import KeyState, Transition
from keyrelay.stores.base import key_id_for
from keyrelay.stores.sqlite import SQLiteStore

#: canaries of four shapes: OpenAI, prefixless 32-hex (Azure, resellers), Gemini, with - and _
SK = "sk-proj-HOSTILEa1b2c3d4e5f6g7h8i9j0k1l2m3"
HEX = "3f2a9c0d1e4b5a6978877665544332211"[:32]
AIZA = "AIzaSyHOSTILE-0123456789_abcdefghijk"
DASHED = "mk_live-hostile_key-0042-with_dash"
KEYS = [SK, HEX, AIZA, DASHED]


def fragments(secret: str) -> set[str]:
    public = len(mask(secret).split("…")[0])  # the sk-proj- every such key shares is not secret
    return {secret[i:i + 8] for i in range(len(secret) - 7) if i + 8 > public}


def leaks(text: str) -> list[str]:
    return [k for k in KEYS if any(f in text for f in fragments(k))]


MODE = web.AppKey("mode", str)


def _echo(key: str) -> dict[str, object]:
    return {"error": {"message": f"Incorrect API key provided: {key}. Key {key[:12]} is bad", "type": key,
                      "param": key, "code": key}}


async def _models(request: web.Request) -> web.StreamResponse:
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    mode = request.app[MODE]
    if mode == "html":
        return web.Response(text=f"<html><body>Sign in to the Wi-Fi ({key})</body></html>", content_type="text/html")
    if key == SK:
        return web.json_response(_echo(key), status=401)
    if key == HEX:
        return web.json_response(_echo(key), status=500)
    if key == AIZA:
        return web.json_response(_echo(key), status=429)
    return web.json_response({"object": "list", "data": [], "error": {"message": key, "code": key}}, status=200)


@contextmanager
def upstream(mode: str) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app = web.Application()
    app[MODE] = mode
    app.router.add_get("/v1/models", _models)
    runner = web.AppRunner(app)

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/v1"

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def seed(tmp_path: Path, invalid: tuple[str, ...] = ()) -> None:
    async def run() -> None:
        store = SQLiteStore(f"sqlite:///{tmp_path / 'kr.db'}")
        await store.open()
        try:
            for rec in (await store.add_keys("main", KEYS, 1.0)).added:
                if rec.secret in invalid:
                    await store.apply(Transition(rec.id, "main", 1, KeyState.ACTIVE, KeyState.INVALID, "invalid key",
                                                 2.0, 0.0, "traffic", "http 401"))
        finally:
            await store.close()

    asyncio.run(run())


def config(tmp_path: Path, base: str) -> Path:
    conf = tmp_path / "keyrelay.toml"
    conf.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "kr.db"}"\n[[pools]]\nname = "main"\nbase_url = "{base}"\n'
        '[pools.checker]\nprobes = ["models"]\ninvalid_interval = 0.0\n'
    )
    return conf


def run(conf: Path, *args: str) -> Result:
    result = CliRunner().invoke(cli, [*args, "--config", str(conf)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def states(conf: Path) -> dict[str, str]:
    return {k["id"]: k["state"] for k in json.loads(run(conf, "keys", "list", "--json").stdout)}


def test_keys_echoed_in_every_field_reach_no_output_event_or_file(tmp_path: Path) -> None:
    seed(tmp_path)
    with upstream("echo") as base:
        conf = config(tmp_path, base)
        outputs = [run(conf, "check").output, run(conf, "check", "--json").output]
    outputs += [run(conf, "events").output, run(conf, "events", "--json").output,
                run(conf, "keys", "list", "--json").output, run(conf, "keys", "list").output]
    outputs += [run(conf, "keys", "show", key_id_for("main", k)).output for k in KEYS]

    assert states(conf)[key_id_for("main", SK)] == "invalid"  # the 401 was read
    events = json.loads(run(conf, "events", "--json").stdout)
    assert any(e["actor"] == "checker" and e["detail"] for e in events)  # evidence was kept, scrubbed
    assert leaks("\n".join(outputs)) == []
    files = b"".join(p.read_bytes() for p in tmp_path.glob("kr.db*") if not p.name.endswith(".key"))
    assert leaks(files.decode("latin-1")) == []


def test_a_200_html_page_for_models_changes_no_state(tmp_path: Path) -> None:
    seed(tmp_path, invalid=(SK, HEX))
    with upstream("html") as base:
        conf = config(tmp_path, base)
        before = states(conf)
        checked = run(conf, "check", "--json")
    rows = json.loads(checked.stdout)

    assert states(conf) == before
    assert before[key_id_for("main", SK)] == "invalid"  # an invalid key is not revived by a portal's page
    assert {r["result"] for r in rows} == {"unknown"} and len(rows) == 4
    assert all(r["before"] == r["after"] for r in rows)
    assert leaks(checked.output) == []
