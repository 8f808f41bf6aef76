"""The judged scenario: the official openai SDK, 500 mixed requests at concurrency 16, through a
real `keyrelay serve` whose pool holds healthy and bad keys of every kind."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import openai

from keyrelay.testing.fake_upstream import Behavior, KeySpec

from .conftest import cli, free_port, write_config

HEALTHY = [f"sk-proj-healthy{i}-{'h' * 30}{i:04d}" for i in range(4)]
INVALID = "sk-proj-invalid-" + "i" * 30 + "I001"
DEACT = "sk-proj-deactivated-" + "d" * 30 + "D002"
QUOTA = "sk-proj-quota-" + "q" * 30 + "Q003"
RATE = "sk-proj-ratelimited-" + "r" * 30 + "R004"
FLAKY = "sk-proj-flaky-" + "f" * 30 + "F005"
ALL = [*HEALTHY, INVALID, DEACT, QUOTA, RATE, FLAKY]
RATE_SPEC = KeySpec(Behavior.RATE_LIMITED, retry_after=1.5, rate_limit_for=0.5)


def keys_by_id(config: Path) -> dict[str, dict[str, object]]:
    out = cli(config, "keys", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {k["masked"]: k for k in json.loads(out.stdout)}


def masked(secret: str) -> str:
    from keyrelay.core.masking import mask

    return mask(secret)


async def _one(client: openai.AsyncOpenAI, i: int) -> None:
    kind = i % 4
    if kind == 0:
        r = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {i}"}])
        assert r.choices[0].message.content
    elif kind == 1:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True},
        )
        parts = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
        assert parts
    elif kind == 2:
        e = await client.embeddings.create(model="text-embedding-3-small", input=f"text {i}")
        assert len(e.data[0].embedding) == 8
    else:
        audio = io.BytesIO(b"RIFF" + bytes(2000))
        audio.name = "clip.wav"
        t = await client.audio.transcriptions.create(model="whisper-1", file=audio)
        assert t.text.startswith("2004 bytes")


def test_openai_sdk_sees_no_error_while_bad_keys_retire(tmp_path, upstream_factory, server_factory):
    up = upstream_factory(
        {
            **{k: Behavior.OK for k in HEALTHY},
            INVALID: Behavior.INVALID,
            DEACT: Behavior.DEACTIVATED,
            QUOTA: Behavior.QUOTA,
            RATE: RATE_SPEC,
            FLAKY: KeySpec(Behavior.FLAKY, flaky_rate=0.3),
        }
    )
    port = free_port()
    config = write_config(tmp_path, up.url, port)
    added = cli(config, "keys", "add", "--pool", "openai", *ALL)
    assert added.returncode == 0, added.stderr
    created = cli(config, "tokens", "create", "sdk-test", "--pool", "openai")
    token = created.stdout.strip().splitlines()[-1]
    server = server_factory(config, port)

    errors: list[BaseException] = []

    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0)
        sem = asyncio.Semaphore(16)

        async def guarded(i: int) -> None:
            async with sem:
                try:
                    await _one(client, i)
                except Exception as exc:  # noqa: BLE001 -- every error is a failure of the test
                    errors.append(exc)

        await asyncio.gather(*(guarded(i) for i in range(500)))
        await client.close()

    started = time.monotonic()
    asyncio.run(run())
    took = time.monotonic() - started
    assert errors == [], errors[:3]

    calls = up.fake.calls
    # retired keys: no new upstream request once their first failure was answered
    for secret in (INVALID, DEACT, QUOTA):
        mine = [c.at for c in calls if c.key == secret]
        assert 1 <= len(mine) <= 16, (secret, len(mine))
        assert max(mine) - min(mine) < 0.25, f"{masked(secret)} was used again later"
    # the traffic went on well beyond that window
    assert took > 0.5 or len(calls) >= 500

    listing = keys_by_id(config)
    assert listing[masked(INVALID)]["state"] == "invalid"
    assert listing[masked(INVALID)]["reason"] == "invalid api key"
    assert listing[masked(DEACT)]["state"] == "invalid"
    assert listing[masked(DEACT)]["reason"] == "account deactivated"
    assert listing[masked(QUOTA)]["state"] == "exhausted"
    assert listing[masked(FLAKY)]["state"] == "active"
    assert all(listing[masked(k)]["state"] == "active" for k in HEALTHY)

    # the rate-limited key: cooling now, active again after its reset. It may still be cooling
    # from the burst above (when the burst took less than its 1.5 s): wait that out first.
    for _ in range(40):
        if keys_by_id(config)[masked(RATE)]["state"] == "active":
            break
        time.sleep(0.1)
    up.set(RATE, RATE_SPEC)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0)
    n0 = up.fake.count(RATE)
    for _ in range(60):
        client.embeddings.create(model="text-embedding-3-small", input="x")
        if up.fake.count(RATE) > n0:
            break
    time.sleep(0.4)  # the gateway's flush and the CLI see the same file
    assert keys_by_id(config)[masked(RATE)]["state"] == "cooling"
    time.sleep(1.6)
    assert keys_by_id(config)[masked(RATE)]["state"] == "active"
    client.close()

    # no client token upstream; no full key in anything the gateway printed
    for c in up.fake.calls:
        assert token not in json.dumps(c.headers)
        assert c.key in ALL
    printed = server.log.read_text() + added.stdout + added.stderr + created.stdout
    assert "status=200" in printed  # the access log is there
    for secret in ALL:
        assert secret not in printed
        assert secret[8:-4] not in printed
