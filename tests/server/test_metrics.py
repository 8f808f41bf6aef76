"""``GET /metrics`` of an in-process gateway: Prometheus text that prometheus_client's own parser
reads, counting what the test sent, and never holding a key or a token."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keyrelay import __version__
from keyrelay.testing.fake_upstream import Behavior

from .conftest import OTHER_POOL_TOKEN, TOKEN

GOOD = "sk-good-0000000000000000000000000000AAAA"
GOOD2 = "plainkey1111111111111111111111111111BBBB"  # no sk- prefix: still never shown
BAD = "sk-bad-22222222222222222222222222222CCCC"
MORE = {f"sk-more-{i:032d}": Behavior.OK for i in range(4)}  # bad keys stay a minority (the guard)
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels (parsed by prometheus_client)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and all((k, labels[k]) in ls for k in labels))


async def scrape(gw: Any, token: str | None = None) -> tuple[int, str]:
    async with gw.get("/metrics", token=token) as r:
        return r.status, await r.text()


async def test_request_counters_equal_the_requests_sent(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK, GOOD2: Behavior.OK})
    for _ in range(7):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
    for _ in range(2):
        async with gw.post("/v1/chat/completions", json=CHAT, token="not-a-token") as r:
            assert r.status == 401
    async with gw.post("/other/chat/completions", json=CHAT) as r:  # this token may not use "other"
        assert r.status == 403
    async with gw.post("/nowhere/chat/completions", json=CHAT) as r:
        assert r.status == 404
    async with gw.session.get(gw.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    found = samples(text)
    assert total(found, "keyrelay_requests_total") == 11
    assert total(found, "keyrelay_requests_total", pool="openai", outcome="ok", status="200") == 7
    assert total(found, "keyrelay_requests_total", pool="openai", outcome="unauthorized", status="401") == 2
    assert total(found, "keyrelay_requests_total", pool="other", outcome="forbidden", status="403") == 1
    assert total(found, "keyrelay_requests_total", outcome="unknown_pool", status="404") == 1
    # latency of the requests that reached a key, in both histograms
    assert total(found, "keyrelay_request_duration_seconds_count", pool="openai") == 7
    assert total(found, "keyrelay_time_to_first_byte_seconds_count", pool="openai") == 7
    assert found[("keyrelay_request_duration_seconds_bucket", (("le", "+Inf"), ("pool", "openai")))] == 7
    assert 0 < total(found, "keyrelay_request_duration_seconds_sum", pool="openai") < 7 * 5
    assert total(found, "keyrelay_keys", pool="openai", state="active") == 2
    assert total(found, "keyrelay_keys_eligible", pool="openai") == 2
    assert total(found, "keyrelay_metrics_workers") == 1
    assert total(found, "keyrelay_build_info", version=__version__) == 1
    # upstream attempts and tokens are summed when the counters are flushed
    await gw.runtime.flush()
    found = samples((await scrape(gw))[1])
    assert total(found, "keyrelay_upstream_attempts_total", pool="openai", outcome="ok") == 7
    assert total(found, "keyrelay_tokens_total", pool="openai", kind="prompt") > 0
    assert total(found, "keyrelay_tokens_total", pool="openai", kind="completion") > 0


async def test_failover_shows_in_attempts_transitions_and_key_states_without_a_key(make_gateway):
    gw = await make_gateway({BAD: Behavior.INVALID, GOOD: Behavior.OK, GOOD2: Behavior.OK, **MORE},
                            pool={"strategy": "round_robin"})
    for _ in range(10):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
    await gw.runtime.flush()
    status, text = await scrape(gw)
    assert status == 200
    found = samples(text)
    assert total(found, "keyrelay_requests_total", outcome="ok") == 10
    assert total(found, "keyrelay_upstream_attempts_total", pool="openai", outcome="invalid_key") == 1
    assert total(found, "keyrelay_upstream_attempts_total", pool="openai") == 11
    assert total(found, "keyrelay_key_transitions_total", pool="openai", to="invalid") == 1
    assert total(found, "keyrelay_key_transitions_total", **{"from": "active"}) == 1
    assert total(found, "keyrelay_keys", pool="openai", state="invalid") == 1
    assert total(found, "keyrelay_keys", pool="openai", state="active") == 6
    for secret in (BAD, GOOD, GOOD2, *MORE, TOKEN, OTHER_POOL_TOKEN):
        assert secret not in text and secret[-12:] not in text
    assert gw.ids[BAD] not in text  # no per-key labels at all: bounded series


async def test_a_stream_counts_its_time_to_first_byte_before_its_end(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, fake_kw={"stream_chunks": 6, "chunk_delay": 0.05})
    async with gw.post("/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        assert r.status == 200
        await r.read()
    found = samples((await scrape(gw))[1])
    first = total(found, "keyrelay_time_to_first_byte_seconds_sum", pool="openai")
    whole = total(found, "keyrelay_request_duration_seconds_sum", pool="openai")
    assert total(found, "keyrelay_time_to_first_byte_seconds_count", pool="openai") == 1
    assert first < whole and whole - first >= 0.2  # five chunks 50 ms apart came after the first byte


async def test_metrics_can_be_turned_off(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, extra={"metrics": {"enabled": False}})
    status, text = await scrape(gw)
    assert status == 404
    assert '"error"' in text
    assert gw.runtime.telemetry is None  # nothing is counted either


async def test_alerts_without_metrics_keep_no_request_tally(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, extra={"metrics": {"enabled": False},
                                                        "alerts": [{"url": "http://127.0.0.1:9/hook"}]})
    for _ in range(5):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
    assert gw.runtime.telemetry is not None and gw.runtime.telemetry.requests == []  # nobody would sum it
    assert (await scrape(gw))[0] == 404


async def test_metrics_for_admins_only_refuse_a_missing_or_client_token(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK}, extra={"metrics": {"require_admin": True}})
    status, text = await scrape(gw)
    assert status == 401 and "admin token" in text
    status, _ = await scrape(gw, token="kr-made-up")
    assert status == 401
    status, text = await scrape(gw, token=TOKEN)  # a client token is not an admin token
    assert status == 403 and "keyrelay_requests" not in text
    async with gw.post("/v1/chat/completions", json=CHAT) as r:  # traffic is not affected
        assert r.status == 200


async def test_metrics_for_admins_only_answer_an_admin_token(make_gateway):
    import inspect
    import time

    from keyrelay.stores import hash_token

    gw = await make_gateway({GOOD: Behavior.OK}, extra={"metrics": {"require_admin": True}})
    if "admin" not in inspect.signature(gw.store.create_token).parameters:
        pytest.skip("admin tokens ('keyrelay tokens create NAME --admin') come with the admin API branch")
    admin = "kr-admin-token-for-metrics-0123456789"
    await gw.store.create_token("ops", ["*"], hash_token(admin), time.time(), admin=True)
    status, text = await scrape(gw, token=admin)
    assert status == 200 and "keyrelay_requests_total" in text
    assert admin not in text


async def test_only_get_is_answered(make_gateway):
    gw = await make_gateway({GOOD: Behavior.OK})
    async with gw.post("/metrics", json={}) as r:
        assert r.status == 405
        assert r.headers["Allow"] == "GET, HEAD"


async def test_a_store_write_that_fails_is_counted_as_a_store_error(make_gateway, monkeypatch):
    from keyrelay.exceptions import StoreUnavailable

    gw = await make_gateway({BAD: Behavior.INVALID, GOOD: Behavior.OK, GOOD2: Behavior.OK, **MORE},
                            pool={"strategy": "round_robin"})

    async def unreachable(*_: Any) -> None:
        raise StoreUnavailable("store unreachable (test)")

    monkeypatch.setattr(gw.store, "apply", unreachable)  # the memory store's write fails, as Redis' would when down
    for _ in range(8):
        async with gw.post("/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
    found = samples((await scrape(gw))[1])
    assert total(found, "keyrelay_store_errors_total", operation="apply") == 1
    assert total(found, "keyrelay_key_transitions_total") == 0  # not written: not counted (it waits in the backlog)
    assert total(found, "keyrelay_keys", state="invalid") == 1  # memory already has it
