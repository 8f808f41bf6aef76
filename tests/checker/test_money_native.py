"""``keyrelay check`` asks a native pool's exhausted keys for money in the pool's own API: a
1-token Messages request on Anthropic (``/v1/messages``, ``max_tokens: 1``, ``anthropic-version``,
``x-api-key``), a ``:generateContent`` with ``maxOutputTokens: 1`` on Gemini. A key whose credit
came back is active again; a key still spent stays exhausted. Against the project's fake upstream."""

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

REFUND = {"anthropic": "sk-ant-api03-refund-" + "r" * 40, "gemini": "AIzaSyRefund-" + "r" * 26}
SPENT = {"anthropic": "sk-ant-api03-spent-" + "s" * 40, "gemini": "AIzaSySpent-" + "s" * 27}


def _setup(tmp_path: Path, root: str, checker: str = "") -> Path:
    db = tmp_path / "kr.db"

    async def seed() -> None:
        store = SQLiteStore(f"sqlite:///{db}")
        await store.open()
        for provider, refund in REFUND.items():
            for rec in (await store.add_keys(provider, [refund, SPENT[provider]], time.time() - 100)).added:
                spent = Transition(rec.id, provider, rec.version, KeyState.ACTIVE, KeyState.EXHAUSTED,
                                   "quota exhausted", time.time() - 60)
                assert await store.apply(spent) is not None
        await store.close()

    asyncio.run(seed())
    conf = tmp_path / "keyrelay.toml"
    text = f'[store]\nurl = "sqlite:///{db}"\n'
    for provider in REFUND:
        text += f'[[pools]]\nname = "{provider}"\nprovider = "{provider}"\nbase_url = "{root}/{provider}"\n{checker}'
    conf.write_text(text)
    return conf


def _check(conf: Path) -> dict[str, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["check", "--config", str(conf), "--json"])
    assert result.exit_code == 0, result.output
    return {r["key_id"]: r for r in json.loads(result.output)}


def _row(rows: dict[str, dict[str, Any]], provider: str, secret: str) -> tuple[str, str]:
    r = rows[key_id_for(provider, secret)]
    return r["before"], r["after"]


def test_a_refunded_native_key_comes_back_and_a_spent_one_stays_exhausted(tmp_path: Path) -> None:
    spent = dict.fromkeys(list(REFUND.values()) + list(SPENT.values()), Behavior.CREDIT_EXHAUSTED)
    up = ThreadedUpstream(spent)
    try:
        conf = _setup(tmp_path, up.fake.root)
        rows = _check(conf)  # nobody has paid yet
        for provider, refund in REFUND.items():
            assert _row(rows, provider, refund) == ("exhausted", "exhausted")
            assert _row(rows, provider, SPENT[provider]) == ("exhausted", "exhausted")
        for refund in REFUND.values():  # credit returns for one key of each pool
            up.fake.set(refund, Behavior.OK)
        up.fake.calls.clear()
        rows = _check(conf)
        calls = list(up.fake.calls)
    finally:
        up.close()
    for provider, refund in REFUND.items():
        assert _row(rows, provider, refund) == ("exhausted", "active"), rows
        assert _row(rows, provider, SPENT[provider]) == ("exhausted", "exhausted"), rows

    posts = {(c.key, c.path): c for c in calls if c.method == "POST"}
    for secret in (REFUND["anthropic"], SPENT["anthropic"]):
        msg = posts[(secret, "/anthropic/v1/messages")]
        assert msg.headers["anthropic-version"] == "2023-06-01" and msg.headers["x-api-key"] == secret
        assert "authorization" not in {h.lower() for h in msg.headers}
        body = json.loads(msg.body)
        assert body["max_tokens"] == 1 and body["model"] == get_dialect("anthropic").cheap_model
        assert body["messages"] == [{"role": "user", "content": "hi"}]
    model = get_dialect("gemini").cheap_model
    for secret in (REFUND["gemini"], SPENT["gemini"]):
        gen = posts[(secret, f"/gemini/v1beta/models/{model}:generateContent")]
        assert gen.headers["x-goog-api-key"] == secret and "key=" not in gen.path
        assert json.loads(gen.body)["generationConfig"] == {"maxOutputTokens": 1}
    assert not [c for c in calls if c.path.endswith("/chat/completions")]  # no OpenAI-shaped probe on native pools


def test_the_native_probe_model_is_configurable(tmp_path: Path) -> None:
    up = ThreadedUpstream(dict.fromkeys(list(REFUND.values()) + list(SPENT.values()), Behavior.OK))
    try:
        conf = _setup(tmp_path, up.fake.root, '[pools.checker]\ncompletion_model = "cheap-one"\n')
        rows = _check(conf)
        calls = list(up.fake.calls)
    finally:
        up.close()
    assert _row(rows, "gemini", REFUND["gemini"]) == ("exhausted", "active")
    assert _row(rows, "anthropic", REFUND["anthropic"]) == ("exhausted", "active")
    paths = {c.path for c in calls if c.method == "POST"}
    assert "/gemini/v1beta/models/cheap-one:generateContent" in paths
    assert {json.loads(c.body)["model"] for c in calls if c.path == "/anthropic/v1/messages"} == {"cheap-one"}
