"""``keyrelay check`` per dialect: the models probe as each native API lists its models
(Anthropic ``/v1/models`` with ``x-api-key`` and ``anthropic-version``, Gemini ``/v1beta/models``
with ``x-goog-api-key``, Azure ``/openai/models`` with ``api-key``) against the fake upstream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner
from client.conftest import ThreadedUpstream

from keyrelay.cli.main import cli
from keyrelay.providers import get_dialect
from keyrelay.providers.probe_base import ProbeKind
from keyrelay.providers.probes import ModelsProbe
from keyrelay.runtime.checker import run_probe
from keyrelay.stores.base import key_id_for
from keyrelay.stores.sqlite import SQLiteStore
from keyrelay.testing.fake_upstream import Behavior

GOOD = {"anthropic": "sk-ant-api03-good-" + "g" * 24, "gemini": "AIzaSy-good-" + "g" * 24, "azure": "azkey-good-" + "g" * 24}
BAD = {p: k.replace("good", "bad").replace("g" * 24, "b" * 24) for p, k in GOOD.items()}


def _config(tmp_path: Path, root: str) -> Path:
    conf = tmp_path / "keyrelay.toml"
    text = f'[store]\nurl = "sqlite:///{tmp_path / "kr.db"}"\n'
    for provider in GOOD:
        text += f'[[pools]]\nname = "{provider}"\nprovider = "{provider}"\nbase_url = "{root}/{provider}"\n'
        text += '[pools.checker]\nprobes = ["models"]\n'
    conf.write_text(text)
    return conf


async def _seed(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'kr.db'}")
    await store.open()
    for provider, good in GOOD.items():
        await store.add_keys(provider, [good, BAD[provider]], 0.0)
    await store.close()


def test_keyrelay_check_probes_each_dialect_its_own_way(tmp_path: Path) -> None:
    up = ThreadedUpstream({**dict.fromkeys(GOOD.values(), Behavior.OK), **dict.fromkeys(BAD.values(), Behavior.INVALID)})
    try:
        asyncio.run(_seed(tmp_path))
        conf = _config(tmp_path, up.fake.root)
        result = CliRunner().invoke(cli, ["check", "--config", str(conf), "--json"])
    finally:
        up.close()
    assert result.exit_code == 0, result.output
    rows = {r["key_id"]: r for r in json.loads(result.output)}
    for provider in GOOD:
        good, bad = rows[key_id_for(provider, GOOD[provider])], rows[key_id_for(provider, BAD[provider])]
        assert (good["result"], good["after"]) == ("ok", "active"), good
        assert (bad["result"], bad["after"]) == ("invalid", "invalid"), bad
    paths = {c.key: c for c in up.fake.calls}
    assert paths[GOOD["anthropic"]].path == "/anthropic/v1/models"
    assert paths[GOOD["anthropic"]].headers["anthropic-version"] == "2023-06-01"
    assert paths[GOOD["gemini"]].path == "/gemini/v1beta/models"
    assert paths[GOOD["azure"]].path.startswith("/azure/openai/models?api-version=")
    assert "sk-ant-api03-good" not in result.output  # keys only ever masked


async def test_a_key_with_its_own_base_url_is_probed_there() -> None:
    from keyrelay.testing.fake_upstream import FakeUpstream

    key = "azkey-own-" + "k" * 24
    async with FakeUpstream({key: Behavior.OK}) as own:
        import aiohttp

        probe = ModelsProbe("http://127.0.0.1:9/azure", get_dialect("azure"))  # the pool's: nothing listens
        async with aiohttp.ClientSession() as session:
            result = await run_probe(session, probe, key, 0.0, 5.0, ("http://127.0.0.1:9/azure", f"{own.root}/azure"))
        assert result.kind is ProbeKind.OK
        assert own.count(key) == 1


def test_keyrelay_check_uses_a_keys_own_base_url(tmp_path: Path) -> None:
    up = ThreadedUpstream({GOOD["azure"]: Behavior.OK})
    try:
        async def seed() -> None:
            store = SQLiteStore(f"sqlite:///{tmp_path / 'kr.db'}")
            await store.open()
            await store.add_keys("azure", [GOOD["azure"]], 0.0, base_url=f"{up.fake.root}/azure")
            await store.close()

        asyncio.run(seed())
        conf = tmp_path / "keyrelay.toml"
        conf.write_text(
            f'[store]\nurl = "sqlite:///{tmp_path / "kr.db"}"\n[[pools]]\nname = "azure"\nprovider = "azure"\n'
            'base_url = "http://127.0.0.1:9"\n[pools.checker]\nprobes = ["models"]\n'
        )
        result = CliRunner().invoke(cli, ["check", "--config", str(conf), "--json"])
    finally:
        up.close()
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["result"] == "ok"
