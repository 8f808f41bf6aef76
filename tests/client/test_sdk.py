"""The official openai SDK, unchanged, with a keyrelay HTTP client: openai 3.x (httpx2) in this
process, openai 1.x (httpx) in a subprocess, since the two cannot share one environment."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

import keyrelay
from keyrelay.client import Pool
from keyrelay.core.model import KeyState, Outcome, Verdict
from keyrelay.core.policy import RetryPolicy
from keyrelay.testing.fake_upstream import SPEECH_BYTES, Behavior

from .conftest import BAD, EXPECTED, GOOD, INVALID, MIXED, ThreadedUpstream

REPO = Path(__file__).resolve().parents[2]
MSG = [{"role": "user", "content": "hi"}]
#: every bad key may come before the good one, so one request may need them all
ENOUGH = RetryPolicy(max_attempts=len(BAD) + 1)


def _sync_client(pool: Pool, base: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="unused",
        base_url=base,
        max_retries=kw.pop("max_retries", 0),
        http_client=keyrelay.httpx_client(pool),
        **kw,
    )


def _async_client(pool: Pool, base: str, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="unused",
        base_url=base,
        max_retries=kw.pop("max_retries", 0),
        http_client=keyrelay.async_httpx_client(pool),
        **kw,
    )


def _sync_call(client: openai.OpenAI, kind: int) -> str:
    if kind == 0:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MSG).choices[0].message.content or ""
    if kind == 1:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    return str(len(client.embeddings.create(model="text-embedding-3-small", input="hi").data))


async def _async_call(client: openai.AsyncOpenAI, kind: int) -> str:
    if kind == 0:
        r = await client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        return r.choices[0].message.content or ""
    if kind == 1:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    events = await client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
    return "".join([e.delta async for e in events if e.type == "response.output_text.delta"])


# -- the judged test -----------------------------------------------------------------------
async def test_300_mixed_sdk_calls_raise_nothing_and_each_bad_key_costs_one_call(
    upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
) -> None:
    up = upstream(MIXED)
    pool = make_pool(list(MIXED), retry=ENOUGH)
    sync, aclient = _sync_client(pool, up.url), _async_client(pool, up.url)
    errors: list[str] = []
    answers: list[str] = []
    try:
        for i in range(300):
            kind, in_thread = i % 3, (i // 3) % 2 == 0
            try:
                if i % 2:
                    answers.append(await _async_call(aclient, kind))
                elif in_thread:  # the sync client from worker threads, as a web app would
                    answers.append(await asyncio.to_thread(_sync_call, sync, kind))
                else:
                    answers.append(_sync_call(sync, kind))
            except Exception as exc:  # noqa: BLE001 — the point of the test: there must be none
                errors.append(f"call {i}: {exc!r}")
    finally:
        sync.close()
        await aclient.close()
    assert errors == []
    assert len(answers) == 300 and all(answers)
    recs = {r.secret: r for r in await asyncio.to_thread(pool.keys)}
    assert {k: recs[k].state for k in BAD} == EXPECTED
    assert {k: up.count(k) for k in BAD} == dict.fromkeys(BAD, 1)  # found bad at its first call, never again
    assert all(recs[k].state is KeyState.ACTIVE for k in GOOD)
    assert sum(recs[k].counters.successes for k in GOOD) == 300


async def test_concurrent_sdk_calls_raise_nothing_and_retire_the_bad_keys(
    upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
) -> None:
    up = upstream(MIXED)
    pool = make_pool(list(MIXED), retry=ENOUGH)
    sync, aclient = _sync_client(pool, up.url), _async_client(pool, up.url)
    gate = asyncio.Semaphore(20)

    async def one(i: int) -> str:
        async with gate:
            if i % 4 == 0:
                return await asyncio.to_thread(_sync_call, sync, i % 3)
            return await _async_call(aclient, i % 3)

    try:
        answers = await asyncio.gather(*(one(i) for i in range(200)))
    finally:
        sync.close()
        await aclient.close()
    assert all(answers)
    recs = {r.secret: r.state for r in await asyncio.to_thread(pool.keys)}
    assert {k: recs[k] for k in BAD} == EXPECTED
    # requests already on their way to a key when it was found bad each cost one call
    assert all(up.count(k) <= 20 for k in BAD)


# -- the two retry layers ------------------------------------------------------------------
def test_with_no_key_left_the_sdk_raises_a_503_at_once_even_with_its_retries_on(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([INVALID])
    pool.acquire().report(Outcome.INVALID_KEY)
    client = _sync_client(pool, "http://127.0.0.1:9/v1", max_retries=2)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        client.models.list()
    assert time.monotonic() - started < 0.4  # x-should-retry: false — no backoff, no second try
    assert info.value.status_code == 503 and info.value.code == "no_key_available"
    client.close()


def test_the_sdk_waits_out_a_short_cooldown_when_its_own_retries_are_on(
    upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
) -> None:
    up = upstream({GOOD[0]: Behavior.OK})
    pool = make_pool([GOOD[0]])
    pool.acquire().report(Verdict(Outcome.RATE_LIMITED, 429, retry_after=0.6))
    with _sync_client(pool, up.url, max_retries=1) as client:
        started = time.monotonic()
        assert client.models.list().data
    assert 0.5 < time.monotonic() - started < 5  # the SDK honoured Retry-After: 1
    assert up.count(GOOD[0]) == 1


# -- other endpoints -----------------------------------------------------------------------
def test_raw_responses_tell_the_attempts_and_key_and_their_elapsed_time(
    upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
) -> None:
    up = upstream({INVALID: Behavior.INVALID, GOOD[0]: Behavior.OK})
    pool = make_pool([INVALID, GOOD[0]], strategy="round_robin")
    with _sync_client(pool, up.url) as client:
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
            assert raw.parse().choices[0].message.content
            assert raw.elapsed.total_seconds() > 0
            assert raw.headers["x-keyrelay-key"] == next(r.id for r in pool.keypool.records() if r.secret == GOOD[0])
            assert raw.headers["x-keyrelay-attempts"] in ("1", "2")
            assert GOOD[0] not in str(raw.http_request.headers)


def test_uploads_and_binary_answers_go_through_with_failover(
    upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
) -> None:
    up = upstream({INVALID: Behavior.INVALID, GOOD[0]: Behavior.OK})
    pool = make_pool([INVALID, GOOD[0]], strategy="round_robin")
    with _sync_client(pool, up.url) as client:
        for _ in range(2):
            f = client.files.create(file=("notes.txt", b"hello keyrelay"), purpose="assistants")
            assert f.bytes == len(b"hello keyrelay")
        text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF0000"))
        assert text.text == "8 bytes received"
        assert client.audio.speech.create(model="tts-1", voice="alloy", input="hi").content == SPEECH_BYTES
    assert up.count(INVALID) == 1


# -- openai 1.x over httpx -----------------------------------------------------------------
_OPENAI1_SCRIPT = r"""
import asyncio, json, os
import httpx, openai, keyrelay
from keyrelay.core.policy import RetryPolicy

keys = os.environ["KEYRELAY_KEYS"].split(",")
base = os.environ["OPENAI_BASE_URL"]
pool = keyrelay.Pool.from_keys(keys, retry=RetryPolicy(max_attempts=len(keys)))
sync = openai.OpenAI(api_key="unused", base_url=base, max_retries=0, http_client=keyrelay.legacy_httpx_client(pool))
msg = [{"role": "user", "content": "hi"}]
errors, answers = [], []

async def main():
    aclient = openai.AsyncOpenAI(
        api_key="unused", base_url=base, max_retries=0, http_client=keyrelay.legacy_async_httpx_client(pool)
    )
    for i in range(300):
        try:
            if i % 4 == 0:
                answers.append(sync.chat.completions.create(model="gpt-4o-mini", messages=msg).choices[0].message.content)
            elif i % 4 == 1:
                s = sync.chat.completions.create(model="gpt-4o-mini", messages=msg, stream=True)
                answers.append("".join(c.choices[0].delta.content or "" for c in s if c.choices))
            elif i % 4 == 2:
                r = await aclient.chat.completions.create(model="gpt-4o-mini", messages=msg)
                answers.append(r.choices[0].message.content)
            else:
                s = await aclient.chat.completions.create(model="gpt-4o-mini", messages=msg, stream=True)
                answers.append("".join([c.choices[0].delta.content or "" async for c in s if c.choices]))
        except Exception as exc:
            errors.append(repr(exc))
    await aclient.close()

asyncio.run(main())
sync.close()
states = {r.secret: r.state.value for r in pool.keys()}
pool.close()
print(json.dumps({"openai": openai.__version__, "httpx": httpx.__version__, "errors": errors,
                  "answers": len([a for a in answers if a]), "states": states}))
"""


@pytest.fixture(scope="session")
def openai1_dir() -> Path:
    """A directory holding openai 1.x and httpx < 0.28 (``KEYRELAY_OPENAI1_DIR``, or installed
    into ``.cache/openai1`` on first use). Skipped when it cannot be installed — except in CI."""
    given = os.environ.get("KEYRELAY_OPENAI1_DIR")
    target = Path(given) if given else REPO / ".cache" / "openai1"
    marker = target / ".keyrelay-complete"
    if marker.exists() or (given and (target / "openai" / "__init__.py").exists()):
        return target
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--upgrade",
        "--target",
        str(target),
        "openai>=1.40,<2",
        "httpx<0.28",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    if proc.returncode != 0:
        why = f"cannot install openai 1.x into {target}: {proc.stderr.strip()[-500:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    marker.write_text("openai>=1.40,<2 httpx<0.28\n")
    return target


def test_openai_1x_with_httpx_raises_nothing_and_retires_the_bad_keys(
    upstream: Callable[..., ThreadedUpstream], openai1_dir: Path
) -> None:
    up = upstream(MIXED)
    env = {**os.environ, "PYTHONPATH": str(openai1_dir), "OPENAI_BASE_URL": up.url, "KEYRELAY_KEYS": ",".join(MIXED)}
    proc = subprocess.run(
        [sys.executable, "-c", _OPENAI1_SCRIPT], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["openai"].startswith("1.") and out["httpx"].startswith("0.2")
    assert out["errors"] == [] and out["answers"] == 300
    assert {k: out["states"][k] for k in BAD} == {k: v.value for k, v in EXPECTED.items()}
    assert all(up.count(k) <= 1 for k in BAD)
