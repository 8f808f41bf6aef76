"""``[[alerts]]`` webhooks, against a real receiver on 127.0.0.1: a retired key, a pool running
low and the correlated-failure guard each POST once; retried with backoff; a webhook that hangs
holds up no request; no body holds a key."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

import keyrelay.runtime.alerts
from keyrelay.config import parse_settings
from keyrelay.runtime.alerts import Alerts
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.telemetry import Telemetry
from keyrelay.stores import open_store
from keyrelay.testing.fake_upstream import Behavior

from .conftest import TOKEN

GOOD = "sk-good-0000000000000000000000000000AAAA"
GOOD2 = "sk-good-1111111111111111111111111111BBBB"
BAD = "plain-bad-key-2222222222222222222222CCCC"  # no sk- prefix
QUOTA = "sk-quota-444444444444444444444444444EEEE"
MORE = {f"sk-more-{i:032d}": Behavior.OK for i in range(4)}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


class Receiver:
    """A webhook on 127.0.0.1 that records what it gets; ``fail`` first answers 500 that many
    times, ``hang`` never answers."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.calls = 0
        self.fail = 0
        self.hang = False
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=500, text="try later")
        assert request.headers["Content-Type"] == "application/json"
        self.bodies.append(orjson.loads(body))
        return web.Response(text="ok")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook/{secret}", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook/T000-webhook-secret"
        return self.url

    async def wait(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        end = time.monotonic() + timeout
        while len(self.bodies) < n:
            assert time.monotonic() < end, f"{len(self.bodies)} of {n} alerts arrived: {self.bodies}"
            await asyncio.sleep(0.02)
        return self.bodies


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[[], Any]]:
    made: list[Receiver] = []

    async def make() -> Receiver:
        r = Receiver()
        await r.start()
        made.append(r)
        return r

    yield make
    for r in made:
        assert r.runner is not None
        await r.runner.cleanup()


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyrelay.runtime.alerts, "BACKOFF", (0.05, 0.2))


def no_secret_in(bodies: list[dict[str, Any]], *secrets: str) -> None:
    raw = orjson.dumps(bodies).decode()
    for s in (*secrets, TOKEN):
        assert s not in raw and s[-10:] not in raw


async def chat(gw: Any, n: int = 1) -> None:
    for _ in range(n):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200, await r.text()


async def test_a_retired_key_is_posted_once_with_its_masked_form_and_id(make_gateway, receiver):
    hook = await receiver()
    gw = await make_gateway(
        {BAD: Behavior.INVALID, QUOTA: Behavior.QUOTA, GOOD: Behavior.OK, GOOD2: Behavior.OK, **MORE},
        pool={"strategy": "round_robin"},
        extra={"alerts": [{"url": hook.url, "on": ["key_retired"]}]},
    )
    await chat(gw, 12)
    bodies = await hook.wait(2)
    await asyncio.sleep(0.5)
    assert len(bodies) == 2  # one per retired key, nothing for the healthy ones
    by_to = {b["to"]: b for b in bodies}
    invalid, exhausted = by_to["invalid"], by_to["exhausted"]
    assert invalid["event"] == "key_retired" and invalid["pool"] == "openai" and invalid["from"] == "active"
    assert invalid["key_id"] == gw.ids[BAD]
    assert invalid["masked"].endswith(BAD[-4:]) and "…" in invalid["masked"]
    assert exhausted["key_id"] == gw.ids[QUOTA] and exhausted["reason"] == "quota exhausted"
    assert invalid["at"].endswith("Z") and invalid["source"] == "keyrelay"
    assert invalid["masked"] in invalid["text"]
    no_secret_in(bodies, BAD, QUOTA, GOOD)


async def test_slack_gets_a_text_message(make_gateway, receiver):
    hook = await receiver()
    gw = await make_gateway(
        {BAD: Behavior.INVALID, GOOD: Behavior.OK, GOOD2: Behavior.OK, **MORE}, pool={"strategy": "round_robin"},
        extra={"alerts": [{"url": hook.url, "kind": "slack", "pools": ["openai"]}]},  # "other" has no key: low
    )
    await chat(gw, 8)
    (body,) = await hook.wait(1)
    assert list(body) == ["text"]  # Slack's incoming-webhook payload
    assert "retired" in body["text"] and gw.ids[BAD] in body["text"] and "openai" in body["text"]
    no_secret_in([body], BAD)


async def test_a_webhook_failing_twice_gets_the_alert_on_the_third_try(make_gateway, receiver, quick_backoff):
    hook = await receiver()
    hook.fail = 2
    gw = await make_gateway(
        {BAD: Behavior.INVALID, GOOD: Behavior.OK, GOOD2: Behavior.OK, **MORE}, pool={"strategy": "round_robin"},
        extra={"alerts": [{"url": hook.url, "on": ["key_retired"], "retries": 3}]},
    )
    await chat(gw, 8)
    (body,) = await hook.wait(1)
    assert body["key_id"] == gw.ids[BAD]
    assert hook.calls == 3
    text = await (await gw.session.get(gw.url + "/metrics")).text()
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(text) for s in f.samples}
    assert found[("keyrelay_alerts_total", (("event", "key_retired"), ("result", "delivered")))] == 1


async def test_a_webhook_that_hangs_holds_up_no_request(make_gateway, receiver, quick_backoff, caplog):
    gc.collect()  # earlier tests' garbage (pools of 50,000 keys) would pause a request here, not the webhook
    hook = await receiver()
    hook.hang = True
    gw = await make_gateway(
        {BAD: Behavior.INVALID, QUOTA: Behavior.QUOTA, GOOD: Behavior.OK, GOOD2: Behavior.OK, **MORE},
        pool={"strategy": "round_robin"},
        extra={"alerts": [{"url": hook.url, "timeout": 0.3, "retries": 1}]},
    )
    slowest, sent, end = 0.0, 0, time.monotonic() + 1.5
    while time.monotonic() < end or not hook.calls:  # two keys retire early on: their alerts hang
        t = time.monotonic()
        await chat(gw)
        slowest, sent = max(slowest, time.monotonic() - t), sent + 1
        assert time.monotonic() < end + 5, "the webhook was never called"
    assert hook.calls >= 1 and sent > 10
    assert slowest < 1.0, slowest  # no request waited on the webhook
    end = time.monotonic() + 5
    while "not delivered" not in caplog.text:
        assert time.monotonic() < end, "the hanging webhook was never given up"
        await asyncio.sleep(0.05)
    assert "T000-webhook-secret" not in caplog.text  # the log names the webhook by host only
    assert "http://127.0.0.1:" in caplog.text
    await chat(gw, 5)


async def test_a_pool_running_low_is_posted_once_per_episode(make_gateway, receiver):
    hook = await receiver()
    gw = await make_gateway(
        {BAD: Behavior.INVALID, QUOTA: Behavior.QUOTA, GOOD: Behavior.OK},
        pool={"strategy": "round_robin", "checker": {"correlated_share": 1.0}},
        extra={"alerts": [{"url": hook.url, "on": ["pool_low"], "pools": ["openai"], "threshold": 2}]},
    )
    await asyncio.sleep(0.6)
    assert hook.bodies == []  # three eligible keys: not low
    await chat(gw, 6)
    (body,) = await hook.wait(1)
    assert body["event"] == "pool_low" and body["pool"] == "openai"
    assert body["eligible"] == 1 and body["threshold"] == 2
    await chat(gw, 4)
    await asyncio.sleep(0.6)
    assert len(hook.bodies) == 1  # still low: not again


async def test_the_correlated_failure_guard_tripping_is_posted(make_gateway, receiver):
    hook = await receiver()
    bad = {f"sk-dead-{i:032d}": Behavior.INVALID for i in range(6)}
    gw = await make_gateway(
        {**bad, GOOD: Behavior.OK}, pool={"strategy": "round_robin"},
        extra={"alerts": [{"url": hook.url, "on": ["guard_tripped"]}]},
    )
    for _ in range(7):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            await r.read()
    (body,) = await hook.wait(1)
    assert body["event"] == "guard_tripped" and body["pool"] == "openai"
    assert body["taken"] >= 3
    no_secret_in([body], *bad)


async def test_pool_low_is_sent_by_one_process_of_several(receiver):
    """Every worker sees the pool run low; the store lock lets one of them send it."""
    hook = await receiver()
    doc = {"pools": [{"name": "openai", "base_url": "http://127.0.0.1:9/v1"}],
           "alerts": [{"url": hook.url, "on": ["pool_low"], "threshold": 1}]}
    settings = parse_settings(doc, {})
    store = open_store("memory://")
    await store.open()
    runners = []
    for _ in range(3):  # three "workers" over one store, each with an empty pool
        telemetry = Telemetry()
        pools = {"openai": KeyPool(settings.pools[0], store)}
        alerts = Alerts(settings, store, pools, telemetry)
        runners.append(asyncio.create_task(alerts.run()))
    try:
        await hook.wait(1)
        await asyncio.sleep(0.8)
        assert len(hook.bodies) == 1
    finally:
        for t in runners:
            t.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
