"""Two gateways on one Redis, driven by the official openai SDK: what one learns about a key the
other heeds at once (pub/sub), and together they spread the traffic evenly over the keys."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from keyrelay.stores.base import key_id_for
from keyrelay.stores.redis import RedisStore
from keyrelay.testing.fake_upstream import Behavior, KeySpec

from .conftest import Server, ThreadedUpstream, cli, free_port, write_config
from .test_workers import Load, flip, wait_for

REDIS_URL = os.environ.get("KEYRELAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
HEALTHY = [f"sk-proj-even{i}-{'e' * 30}{i:04d}" for i in range(5)]
VICTIM = "sk-proj-victim-" + "v" * 30 + "V001"
COOLED = "sk-proj-cooled-" + "c" * 30 + "C001"


class Pair:
    """Two `keyrelay serve` processes on one Redis prefix, and a client token for both."""

    def __init__(self, up: ThreadedUpstream, gateways: list[Server], token: str, url: str) -> None:
        self.up, self.gateways, self.token, self.url = up, gateways, token, url

    @property
    def urls(self) -> list[str]:
        return [g.url for g in self.gateways]


@pytest.fixture
def pair(tmp_path: Path, upstream_factory: Any) -> Iterator[Any]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but no Redis answers at {REDIS_URL}: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"krtest-{uuid.uuid4().hex[:12]}"
    url = f"{REDIS_URL}?prefix={prefix}"
    started: list[Server] = []

    def make(keys: dict[str, Behavior | KeySpec], strategy: str = "random") -> Pair:
        up = upstream_factory(keys)
        gateways = []
        for i in (1, 2):
            d = tmp_path / f"g{i}"
            d.mkdir()
            port = free_port()
            config = write_config(d, up.url, port, strategy=strategy)
            text = config.read_text()
            config.write_text(text.replace(text.split("[store]\n")[1].splitlines()[0], f'url = "{url}"'))
            gateways.append(Server(config, port, d / "gateway.log"))
        assert cli(gateways[0].config, "keys", "add", "--pool", "openai", *keys).returncode == 0
        token = cli(gateways[0].config, "tokens", "create", "two", "--pool", "openai").stdout.strip().splitlines()[-1]
        for g in gateways:
            started.append(g)
            g.start()
        return Pair(up, gateways, token, url)

    try:
        yield make
    finally:
        for g in started:
            g.stop()
        names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(names), 1000):
            client.delete(*names[i:i + 1000])
        client.close()


def _state(url: str, secret: str) -> str:
    async def read() -> str:
        store = RedisStore(url)
        await store.open()
        try:
            rec = await store.get(key_id_for("openai", secret))
            return "" if rec is None else rec.state.value
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_key_invalid_on_one_gateway_gets_nothing_more_through_the_other(pair: Any) -> None:
    p: Pair = pair({**{k: Behavior.OK for k in HEALTHY}, VICTIM: Behavior.OK})
    up = p.up
    with Load(p.urls, p.token, concurrency=16) as load:
        wait_for(lambda: load.ok >= 400 and up.fake.count(VICTIM) >= 20, 30, "no traffic")
        flipped = flip(up, VICTIM, Behavior.INVALID)
        time.sleep(2.0)
    assert load.errors == [], load.errors[:3]

    failed = sorted(c.at for c in up.fake.calls if c.key == VICTIM and c.at >= flipped)
    assert failed, "the key was not tried after it went bad"
    first = failed[0]
    late = [round((t - first) * 1000, 1) for t in failed if t > first + 0.1]
    assert late == [], f"calls to the invalid key started this many ms after its first failure: {late}"
    assert sum(1 for c in up.fake.calls if c.at > first + 0.5) > 200, "the traffic did not go on"
    assert all("status=200" in g.log.read_text() for g in p.gateways)  # both gateways served
    assert _state(p.url, VICTIM) == "invalid"


def test_a_key_cooled_by_one_gateway_is_avoided_by_the_other_until_its_time_is_up(pair: Any) -> None:
    p: Pair = pair({**{k: Behavior.OK for k in HEALTHY}, COOLED: Behavior.OK})
    up = p.up
    with Load(p.urls, p.token, concurrency=16) as load:
        wait_for(lambda: load.ok >= 400 and up.fake.count(COOLED) >= 20, 30, "no traffic")
        # 429 with a 5 s retry-after, for 0.5 s: once the cooldown is over the key answers again
        flipped = flip(up, COOLED, KeySpec(Behavior.RATE_LIMITED, retry_after=5, rate_limit_for=0.5))
        wait_for(lambda: any(c.key == COOLED and c.at >= flipped for c in up.fake.calls), 10, "not tried")
        first = min(c.at for c in up.fake.calls if c.key == COOLED and c.at >= flipped)
        wait_for(lambda: time.monotonic() > first + 6.5, 10, "")
    assert load.errors == [], load.errors[:3]

    after = [c.at - first for c in up.fake.calls if c.key == COOLED and c.at >= first]
    during = [round(t, 3) for t in after if 0.1 <= t <= 4.9]
    assert during == [], f"the cooling key was used this many seconds after its 429: {during}"
    assert any(t >= 5.0 for t in after), "the key was not used again once its cooldown was over"
    assert sum(1 for c in up.fake.calls if first + 1 < c.at < first + 4) > 200, "the traffic did not go on"


def test_ten_thousand_requests_over_both_gateways_spread_evenly(pair: Any) -> None:
    p: Pair = pair({k: Behavior.OK for k in HEALTHY}, strategy="random")
    up = p.up
    errors: list[BaseException] = []

    async def run() -> None:
        clients = [openai.AsyncOpenAI(base_url=f"{u}/v1", api_key=p.token, max_retries=0) for u in p.urls]
        todo = iter(range(10_000))

        async def worker(client: openai.AsyncOpenAI) -> None:
            for _ in todo:
                try:
                    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
                    assert r.choices[0].message.content
                except Exception as exc:  # noqa: BLE001 - every error is a failure of the test
                    errors.append(exc)

        await asyncio.gather(*(worker(clients[i % 2]) for i in range(32)))
        for c in clients:
            await c.close()

    started = time.monotonic()
    asyncio.run(run())
    took = time.monotonic() - started
    assert errors == [], errors[:3]
    shares = Counter(c.key for c in up.fake.calls)
    assert sum(shares.values()) == 10_000
    # random (weighted, equal weights), picked independently by each gateway: 2,000 each,
    # standard deviation 40, so ± 200 (10 %) is five deviations
    assert all(1_800 <= shares[k] <= 2_200 for k in HEALTHY), (dict(shares), f"{took:.1f}s")
