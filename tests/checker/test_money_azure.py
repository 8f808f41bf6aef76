"""``keyrelay check`` asks an Azure pool's exhausted keys for money where a real Azure resource
answers: the v1 API's ``POST {resource}/openai/v1/chat/completions`` with ``model`` (the
deployment) and ``api-key`` auth — Azure serves no ``{resource}/chat/completions``. A key whose
credit came back is active again; a key still spent stays exhausted. Against the project's fake
Azure upstream (``testing/fake_azure.py``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from client.conftest import ThreadedUpstream

from keyrelay.cli.main import cli
from keyrelay.core.model import KeyState, Transition
from keyrelay.providers import get_dialect
from keyrelay.stores.base import key_id_for
from keyrelay.stores.sqlite import SQLiteStore
from keyrelay.testing.fake_upstream import Behavior

REFUND = "3f9c1a7e2b8d4c6f9a0e1b2c3d4e5f60"  # Azure keys are 32 hex digits, no prefix
SPENT = "8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d"


def _setup(tmp_path: Path, base_url: str, checker: str = "") -> Path:
    db = tmp_path / "kr.db"

    async def seed() -> None:
        store = SQLiteStore(f"sqlite:///{db}")
        await store.open()
        for rec in (await store.add_keys("azure", [REFUND, SPENT], time.time() - 100)).added:
            spent = Transition(rec.id, "azure", rec.version, KeyState.ACTIVE, KeyState.EXHAUSTED,
                               "quota exhausted", time.time() - 60)
            assert await store.apply(spent) is not None
        await store.close()

    asyncio.run(seed())
    conf = tmp_path / "keyrelay.toml"
    conf.write_text(f'[store]\nurl = "sqlite:///{db}"\n[[pools]]\nname = "azure"\nprovider = "azure"\n'
                    f'base_url = "{base_url}"\n{checker}')
    return conf


def _check(conf: Path) -> dict[str, tuple[str, str]]:
    result = CliRunner().invoke(cli, ["check", "--config", str(conf), "--json"])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)
    return {r["key_id"]: (r["before"], r["after"]) for r in rows}


def test_a_refunded_azure_key_comes_back_and_a_spent_one_stays_exhausted(tmp_path: Path) -> None:
    up = ThreadedUpstream(dict.fromkeys((REFUND, SPENT), Behavior.CREDIT_EXHAUSTED))
    try:
        conf = _setup(tmp_path, up.fake.root + "/azure")  # the resource: https://<name>.openai.azure.com
        rows = _check(conf)  # nobody has paid yet
        assert rows[key_id_for("azure", REFUND)] == ("exhausted", "exhausted")
        assert rows[key_id_for("azure", SPENT)] == ("exhausted", "exhausted")
        up.fake.set(REFUND, Behavior.OK)  # credit returns for one key
        up.fake.calls.clear()
        rows = _check(conf)
        calls = list(up.fake.calls)
    finally:
        up.close()
    assert rows[key_id_for("azure", REFUND)] == ("exhausted", "active"), rows
    assert rows[key_id_for("azure", SPENT)] == ("exhausted", "exhausted"), rows

    posts = {(c.key, c.path): c for c in calls if c.method == "POST"}
    for secret in (REFUND, SPENT):
        chat = posts[(secret, "/azure/openai/v1/chat/completions")]
        assert chat.headers["api-key"] == secret
        assert "authorization" not in {h.lower() for h in chat.headers}
        body = json.loads(chat.body)
        assert body["max_tokens"] == 1 and body["model"] == get_dialect("azure").cheap_model
    assert not [c for c in calls if c.path in ("/azure/chat/completions", "/chat/completions")]


def test_the_azure_probe_asks_the_configured_deployment(tmp_path: Path) -> None:
    up = ThreadedUpstream(dict.fromkeys((REFUND, SPENT), Behavior.OK))
    try:
        conf = _setup(tmp_path, up.fake.root + "/azure", '[pools.checker]\ncompletion_model = "my-gpt4o-mini"\n')
        rows = _check(conf)
        calls = list(up.fake.calls)
    finally:
        up.close()
    assert rows[key_id_for("azure", REFUND)] == ("exhausted", "active")
    models = {json.loads(c.body)["model"] for c in calls if c.path == "/azure/openai/v1/chat/completions"}
    assert models == {"my-gpt4o-mini"}


def test_a_deployment_base_url_is_probed_with_an_api_version() -> None:
    req = get_dialect("azure").one_token("https://res.openai.azure.com/openai/deployments/mini/", "mini")
    assert req.url == "https://res.openai.azure.com/openai/deployments/mini/chat/completions?api-version=2024-10-21"
    assert get_dialect("azure").one_token("https://res.openai.azure.com/openai/v1", "m").url == (
        "https://res.openai.azure.com/openai/v1/chat/completions")
