"""Library mode's Pool: building it, rotation by hand, reports, and sharing a store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import openai
import pytest

import keyrelay
import keyrelay.client
from keyrelay.client import KeyLease, Pool
from keyrelay.config import Settings
from keyrelay.core.model import KeyState, Outcome, Verdict
from keyrelay.runtime.process import Runtime

from .conftest import states

K1, K2, K3 = (f"sk-hand-{i:024d}" for i in range(1, 4))


def _response(status: int, body: bytes) -> httpx2.Response:
    req = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")
    return httpx2.Response(status, content=body, headers={"content-type": "application/json"}, request=req)


QUOTA_BODY = (
    b'{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}'
)
INVALID_BODY = (
    b'{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}'
)


# -- building ------------------------------------------------------------------------------
def test_from_keys_holds_the_keys_active_and_never_shows_them(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([K1, K2])
    recs = pool.keys()
    assert sorted(r.secret for r in recs) == [K1, K2]
    assert {r.state for r in recs} == {KeyState.ACTIVE}
    lease = pool.acquire()
    assert K1 not in repr(pool) and lease.key not in repr(lease)
    assert lease.masked in repr(lease) and lease.key in (K1, K2)
    lease.release()


@pytest.mark.parametrize(
    ("keys", "error"),
    [("sk-just-one-string-0000000000", TypeError), (["sk-with space 000000000000"], ValueError)],
)
def test_from_keys_refuses_what_is_not_a_list_of_valid_keys(keys: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        Pool.from_keys(keys)  # type: ignore[arg-type]


@pytest.mark.parametrize(("option", "value"), [("provider", "nope"), ("strategy", "fastest")])
def test_open_refuses_unknown_options(option: str, value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=value):
        Pool.open(f"sqlite:///{tmp_path / 'k.db'}", **{option: value})  # type: ignore[arg-type]


def test_the_library_mode_names_are_pinned() -> None:
    assert keyrelay.client.__all__ == [
        "CoolingPolicy",
        "KeyLease",
        "NoKeyAvailable",
        "Pool",
        "RetryPolicy",
        "async_httpx_client",
        "httpx_client",
        "legacy_async_httpx_client",
        "legacy_httpx_client",
        "verdict_of",
    ]
    for name in set(keyrelay.client.__all__) - {"verdict_of"}:
        assert name in keyrelay.__all__
        assert getattr(keyrelay, name) is getattr(keyrelay.client, name)


def test_the_public_names_are_exported_lazily() -> None:
    code = (
        "import sys, keyrelay; assert 'keyrelay.client' not in sys.modules; "
        "assert not {'httpx', 'httpx2', 'openai'} & set(sys.modules); "
        "keyrelay.Pool; keyrelay.NoKeyAvailable; assert 'httpx2' not in sys.modules; "
        "keyrelay.httpx_client; assert 'httpx2' not in sys.modules and 'httpx' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert keyrelay.NoKeyAvailable is keyrelay.runtime.attempts.NoKeyAvailable
    for name in ("Pool", "httpx_client", "async_httpx_client", "legacy_httpx_client", "legacy_async_httpx_client"):
        assert name in keyrelay.__all__ and getattr(keyrelay, name) is not None


# -- rotation by hand ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("result", "state"),
    [
        (Outcome.OK, KeyState.ACTIVE),
        (Outcome.INVALID_KEY, KeyState.INVALID),
        (Verdict(Outcome.RATE_LIMITED, 429, retry_after=30), KeyState.COOLING),
        (_response(429, QUOTA_BODY), KeyState.EXHAUSTED),
        (_response(401, INVALID_BODY), KeyState.INVALID),
        (openai.AuthenticationError("bad key", response=_response(401, INVALID_BODY), body=None), KeyState.INVALID),
        (openai.APIConnectionError(request=httpx2.Request("GET", "https://x.test")), KeyState.ACTIVE),
        (
            openai.APIError(
                "stream",
                httpx2.Request("GET", "https://x.test"),
                body={"code": "insufficient_quota", "message": "quota"},
            ),
            KeyState.EXHAUSTED,
        ),
    ],
    ids=[
        "ok",
        "outcome",
        "verdict",
        "httpx2-429-quota",
        "httpx2-401",
        "sdk-status-error",
        "sdk-connection",
        "sdk-stream",
    ],
)
def test_report_takes_outcomes_verdicts_responses_and_sdk_errors(
    result: object, state: KeyState, make_pool: Callable[..., Pool]
) -> None:
    pool = make_pool([K1])
    lease = pool.acquire()
    lease.report(result)
    assert not lease.open
    assert pool.keys()[0].state is state


def test_a_network_error_is_counted_but_retires_nothing(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([K1])
    verdict = pool.acquire().report(httpx2.ConnectError("refused"))
    assert verdict is not None and verdict.outcome is Outcome.NETWORK_ERROR
    rec = pool.keys()[0]
    assert rec.state is KeyState.ACTIVE and rec.counters.network_error == 1


def test_a_lease_is_reported_once(make_pool: Callable[..., Pool]) -> None:
    lease = make_pool([K1]).acquire()
    lease.report()
    with pytest.raises(RuntimeError, match="already reported"):
        lease.report(Outcome.INVALID_KEY)
    with pytest.raises(TypeError):
        make_pool([K2]).acquire().report("ok")


def test_the_lease_block_reports_ok_on_a_normal_exit(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([K1])
    with pool.lease() as lease:
        assert isinstance(lease, KeyLease) and lease.key == K1
    assert lease.verdict == Verdict(Outcome.OK)
    assert pool.keys()[0].counters.successes == 1


def test_the_lease_block_classifies_an_sdk_error_and_raises_it_again(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([K1])
    err = openai.RateLimitError("quota", response=_response(429, QUOTA_BODY), body=None)
    with pytest.raises(openai.RateLimitError), pool.lease():
        raise err
    assert pool.keys()[0].state is KeyState.EXHAUSTED


def test_an_unrelated_exception_releases_the_key_at_no_cost(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([K1])
    with pytest.raises(ZeroDivisionError), pool.lease():
        1 / 0  # noqa: B018
    rec = pool.keys()[0]
    assert rec.state is KeyState.ACTIVE and rec.counters.requests == 0
    assert pool.keypool.state.inflight(rec.id) == 0


def test_a_lease_reported_inside_the_block_is_not_reported_again(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([K1, K2])
    with pool.lease() as lease:
        lease.report(Outcome.INVALID_KEY)
    assert states(pool)[lease.key] is KeyState.INVALID


def test_acquire_skips_excluded_keys_and_raises_when_none_is_left(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([K1, K2])
    first = pool.acquire()
    second = pool.acquire(exclude=[first.key_id])
    assert second.key_id != first.key_id
    with pytest.raises(keyrelay.NoKeyAvailable):
        pool.acquire(exclude=[first.key_id, second.key_id])


def test_no_key_available_names_when_a_cooling_key_frees_up(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([K1, K2])
    pool.acquire().report(Outcome.INVALID_KEY)
    pool.acquire().report(Verdict(Outcome.RATE_LIMITED, 429, retry_after=20))
    with pytest.raises(keyrelay.NoKeyAvailable) as info:
        pool.acquire()
    assert info.value.retry_after is not None and 15 < info.value.retry_after <= 20


async def test_async_leases_await_their_state_change(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool([K1, K2])
    lease = await pool.aacquire()
    await lease.areport(Outcome.QUOTA_EXHAUSTED)
    with pytest.raises(openai.APIConnectionError):
        async with pool.alease() as other:
            raise openai.APIConnectionError(request=httpx2.Request("GET", "https://x.test"))
    async with pool.alease() as last:
        pass
    assert other.key == last.key != lease.key
    stored = {r.secret: r for r in await asyncio.to_thread(pool.keys)}
    assert stored[lease.key].state is KeyState.EXHAUSTED
    assert stored[last.key].counters.network_error == 1 and stored[last.key].counters.successes == 1


# -- life cycle ----------------------------------------------------------------------------
def test_the_pool_runs_one_background_thread_and_close_stops_it() -> None:
    before = {t.name for t in threading.enumerate()}
    with Pool.from_keys([K1], "solo") as pool:
        assert "keyrelay-solo" in {t.name for t in threading.enumerate()} - before
    assert pool.closed
    assert "keyrelay-solo" not in {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeError, match="closed"):
        pool.acquire()
    pool.close()  # idempotent


async def test_an_async_pool_closes_with_async_with() -> None:
    async with Pool.from_keys([K1]) as pool, pool.alease():
        pass
    assert pool.closed


# -- one store, many processes -------------------------------------------------------------
def test_counters_are_written_to_the_store_on_close(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    with Pool.open(url) as pool:
        assert pool.add_keys([K1]) == 1 and pool.add_keys([K1]) == 0
        for _ in range(3):
            pool.acquire().report()
    with Pool.open(url) as again:
        assert again.keys()[0].counters.successes == 3


async def test_a_key_retired_in_process_is_retired_for_a_gateway_on_the_same_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    library = await asyncio.to_thread(Pool.open, url)
    other = await asyncio.to_thread(Pool.open, url)
    gateway = Runtime(Settings(store_url=url))  # what `keyrelay serve` runs, on the same file
    try:
        await asyncio.to_thread(library.add_keys, [K1, K2, K3])
        await gateway.start()
        deadline = time.monotonic() + 2
        while len(other.keypool.records()) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        lease = library.acquire()
        await lease.areport(openai.AuthenticationError("bad", response=_response(401, INVALID_BODY), body=None))
        started = time.monotonic()

        def seen() -> tuple[KeyState | None, KeyState | None]:
            a = {r.id: r.state for r in other.keypool.records()}.get(lease.key_id)
            b = {r.id: r.state for r in gateway.default_pool.records()}.get(lease.key_id)
            return a, b

        while seen() != (KeyState.INVALID, KeyState.INVALID) and time.monotonic() - started < 1.5:
            await asyncio.sleep(0.05)
        assert seen() == (KeyState.INVALID, KeyState.INVALID)
        assert time.monotonic() - started <= 1.2
        for _ in range(20):
            taken = other.acquire()
            assert taken.key_id != lease.key_id
            taken.release()
    finally:
        await gateway.stop()
        await library.aclose()
        await other.aclose()
