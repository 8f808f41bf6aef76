"""What the key-rotating transport does, with either HTTP library.

``test_transport_httpx2.py`` and ``test_transport_httpx.py`` subclass :class:`TransportContract`
with their module and client factories, so both libraries pass the very same tests.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

import orjson
import pytest

from keyrelay.client import Pool
from keyrelay.core.model import KeyState, Outcome, Verdict
from keyrelay.core.policy import RetryPolicy
from keyrelay.testing.fake_upstream import Behavior

from .conftest import BAD, EXPECTED, GOOD, MIXED, ThreadedUpstream, states

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
K1, K2 = "sk-first-0000000000000000000000k1", "sk-second-000000000000000000000k2"
SSE_BODY = (
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


def _key(request: Any) -> str:
    return str(request.headers.get("authorization", ""))[7:]


def _json_error(status: int, code: str, type_: str = "invalid_request_error") -> tuple[int, bytes]:
    return status, orjson.dumps({"error": {"message": f"error {code}", "type": type_, "param": None, "code": code}})


class TransportContract:
    http: ClassVar[Any]
    client: ClassVar[Callable[..., Any]]
    aclient: ClassVar[Callable[..., Any]]

    # -- helpers -------------------------------------------------------------------------
    def chunked(self, chunks: list[bytes]) -> Any:
        """A response stream that yields ``chunks`` one by one (sync and async)."""
        http = self.http

        class Chunks(http.SyncByteStream, http.AsyncByteStream):  # type: ignore[misc,name-defined]
            def __iter__(self) -> Iterator[bytes]:
                yield from chunks

            async def __aiter__(self) -> AsyncIterator[bytes]:
                for c in chunks:
                    yield c

        return Chunks()

    def mock(self, handler: Callable[[Any], Any]) -> Any:
        return self.http.MockTransport(handler)

    # -- credentials ---------------------------------------------------------------------
    def test_each_request_carries_a_pool_key_and_none_of_the_callers(self, make_pool: Callable[..., Pool]) -> None:
        seen: list[Any] = []

        def handler(request: Any) -> Any:
            seen.append(request.headers)
            return self.http.Response(200, json={"ok": True})

        pool = make_pool([K1])
        with self.client(pool, transport=self.mock(handler)) as c:
            r = c.post(
                "https://up.test/v1/chat/completions",
                json=CHAT,
                headers={"Authorization": "Bearer caller-token", "api-key": "caller", "x-api-key": "caller"},
            )
        assert r.status_code == 200 and r.json() == {"ok": True}
        assert seen[0]["authorization"] == f"Bearer {K1}"
        assert "api-key" not in seen[0] and "x-api-key" not in seen[0]
        # the caller's own request object never holds the pool's key
        assert r.request.headers["authorization"] == "Bearer caller-token"
        assert r.headers["x-keyrelay-attempts"] == "1"

    def test_the_request_body_is_sent_again_unchanged_on_failover(self, make_pool: Callable[..., Pool]) -> None:
        bodies: list[bytes] = []

        def handler(request: Any) -> Any:
            bodies.append(request.read())
            status, body = _json_error(401, "invalid_api_key") if _key(request) == K1 else (200, b'{"ok":true}')
            return self.http.Response(status, content=body, headers={"content-type": "application/json"})

        pool = make_pool([K1, K2], strategy="round_robin")
        with self.client(pool, transport=self.mock(handler)) as c:
            for _ in range(4):
                assert c.post("https://up.test/v1/chat/completions", json=CHAT).status_code == 200
        assert len(set(bodies)) == 1 and orjson.loads(bodies[0]) == CHAT
        assert states(pool)[K1] is KeyState.INVALID

    # -- failover ------------------------------------------------------------------------
    def test_bad_keys_are_retired_after_one_call_and_every_request_succeeds(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream()
        pool = make_pool(list(MIXED), retry=RetryPolicy(max_attempts=len(MIXED)))
        with self.client(pool) as c:
            for i in range(60):
                r = c.post(f"{up.url}/chat/completions", json=STREAM if i % 2 else CHAT)
                assert r.status_code == 200
                assert b"Hello" in r.content
        seen = states(pool)
        for k in BAD:  # a bad key met once is out for good (keys are drawn at random: one may be missed)
            assert up.count(k) <= 1
            assert seen[k] is (EXPECTED[k] if up.count(k) else KeyState.ACTIVE)
        assert sum(up.count(k) for k in BAD) >= 3
        assert all(seen[k] is KeyState.ACTIVE for k in GOOD)

    async def test_async_bad_keys_are_retired_after_one_call_and_every_request_succeeds(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream()
        pool = make_pool(list(MIXED), retry=RetryPolicy(max_attempts=len(MIXED)))
        async with self.aclient(pool) as c:
            for i in range(60):
                r = await c.post(f"{up.url}/chat/completions", json=STREAM if i % 2 else CHAT)
                assert r.status_code == 200
                assert b"Hello" in r.content
        seen = states(pool)
        for k in BAD:
            assert up.count(k) <= 1
            assert seen[k] is (EXPECTED[k] if up.count(k) else KeyState.ACTIVE)
        recs = pool.keys()
        stored = {r.secret: r.state for r in recs}  # the transitions reached the store
        assert stored == seen

    def test_a_client_error_is_returned_as_is_and_not_retried(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.OK, K2: Behavior.OK})
        pool = make_pool([K1, K2])
        with self.client(pool) as c:
            r = c.post(f"{up.url}/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        assert r.headers["x-keyrelay-attempts"] == "1"
        assert up.count(K1) + up.count(K2) == 1
        assert set(states(pool).values()) == {KeyState.ACTIVE}

    def test_a_model_no_key_may_use_is_asked_of_each_key_once_then_answered_at_once(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.OK, K2: Behavior.OK})
        pool = make_pool([K1, K2])
        with self.client(pool) as c:
            r = c.post(f"{up.url}/chat/completions", json={**CHAT, "model": "no-such-model"})
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
            assert r.headers["x-keyrelay-attempts"] == "2"  # another key may have had it
            r = c.post(f"{up.url}/chat/completions", json={**CHAT, "model": "no-such-model"})
            assert r.status_code == 404 and r.headers["x-keyrelay-attempts"] == "1"
        assert up.count(K1) + up.count(K2) == 3
        assert set(states(pool).values()) == {KeyState.ACTIVE}

    def test_when_every_attempt_fails_the_last_error_comes_back_without_key_material(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.INVALID, K2: Behavior.INVALID})
        pool = make_pool([K1, K2])
        with self.client(pool) as c:
            r = c.post(f"{up.url}/chat/completions", json=CHAT)
        assert r.status_code == 401
        assert r.headers["x-keyrelay-attempts"] == "2"
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert K1 not in r.text and K2 not in r.text and "***" not in r.text
        assert int(r.headers["content-length"]) == len(r.content)

    def test_attempts_are_bounded_by_the_retry_policy(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        keys = [f"sk-spent-{i:024d}" for i in range(4)]
        up = upstream(dict.fromkeys(keys, Behavior.QUOTA))
        pool = make_pool(keys, retry=RetryPolicy(max_attempts=2))
        with self.client(pool) as c:
            r = c.post(f"{up.url}/chat/completions", json=CHAT)
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
        assert sum(up.count(k) for k in keys) == 2

    def test_an_error_inside_a_200_fails_over(self, make_pool: Callable[..., Pool]) -> None:
        def handler(request: Any) -> Any:
            if _key(request) == K1:  # resellers answer a spent balance with HTTP 200
                return self.http.Response(200, content=_json_error(429, "insufficient_quota", "insufficient_quota")[1])
            return self.http.Response(200, json={"ok": True})

        pool = make_pool([K1, K2], strategy="round_robin")
        with self.client(pool, transport=self.mock(handler)) as c:
            assert all(c.get("https://up.test/v1/models").json() == {"ok": True} for _ in range(5))
        assert states(pool)[K1] is KeyState.EXHAUSTED

    def test_a_compressed_answer_is_decoded_once(self, make_pool: Callable[..., Pool]) -> None:
        body = orjson.dumps({"object": "list", "data": [], "usage": {"prompt_tokens": 5, "completion_tokens": 0}})
        gz = gzip.compress(body)

        def handler(request: Any) -> Any:
            headers = {"content-type": "application/json", "content-encoding": "gzip", "content-length": str(len(gz))}
            return self.http.Response(200, headers=headers, content=gz)

        pool = make_pool([K1])
        with self.client(pool, transport=self.mock(handler)) as c:
            r = c.post("https://up.test/v1/embeddings", json={"input": "x"})
        assert r.content == body and "content-encoding" not in r.headers
        assert pool.keys()[0].counters.prompt_tokens == 5

    def test_tokens_are_counted_for_answers_and_streams(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.OK})
        pool = make_pool([K1])
        with self.client(pool) as c:
            c.post(f"{up.url}/chat/completions", json=CHAT)  # 10 prompt tokens
            c.post(f"{up.url}/chat/completions", json=STREAM)  # 10, from the last chunk
            c.post(f"{up.url}/embeddings", json={"model": "text-embedding-3-small", "input": ["a", "b", "c"]})  # 30
        rec = pool.keys()[0]
        assert (rec.counters.successes, rec.counters.prompt_tokens, rec.counters.completion_tokens) == (3, 50, 14)

    # -- no key --------------------------------------------------------------------------
    def test_no_eligible_key_gives_a_503_in_the_openai_shape(self, make_pool: Callable[..., Pool]) -> None:
        pool = make_pool([K1, K2])
        pool.acquire().report(Outcome.INVALID_KEY)
        pool.acquire().report(Outcome.QUOTA_EXHAUSTED)
        calls: list[Any] = []
        with self.client(pool, transport=self.mock(calls.append)) as c:
            r = c.get("https://up.test/v1/models")
            assert r.status_code == 503 and not calls
            assert r.json()["error"]["code"] == "no_key_available"
            assert r.headers["x-should-retry"] == "false" and "retry-after" not in r.headers

    async def test_async_no_eligible_key_names_when_a_cooling_key_frees_up(
        self, make_pool: Callable[..., Pool]
    ) -> None:
        pool = make_pool([K1])
        await pool.acquire().areport(Verdict(Outcome.RATE_LIMITED, 429, retry_after=7.2))
        async with self.aclient(pool, transport=self.mock(lambda r: self.http.Response(200))) as c:
            r = await c.get("https://up.test/v1/models")
        assert r.status_code == 503 and r.headers["retry-after"] == "8"
        assert "x-should-retry" not in r.headers

    # -- network errors ------------------------------------------------------------------
    def test_network_errors_fail_over_and_do_not_retire_keys(self, make_pool: Callable[..., Pool]) -> None:
        def handler(request: Any) -> Any:
            if _key(request) == K1:
                raise self.http.ConnectError("connection refused", request=request)
            return self.http.Response(200, json={"ok": True})

        pool = make_pool([K1, K2])
        with self.client(pool, transport=self.mock(handler)) as c:
            assert all(c.get("https://up.test/v1/models").status_code == 200 for _ in range(6))
        assert set(states(pool).values()) == {KeyState.ACTIVE}
        recs = pool.keys()
        assert {r.secret: r.counters.successes for r in recs}[K1] == 0

    def test_when_every_attempt_hits_a_network_error_the_last_is_raised_without_the_key(
        self, make_pool: Callable[..., Pool]
    ) -> None:
        def handler(request: Any) -> Any:
            raise self.http.ConnectError(f"cannot send {request.headers['authorization']}", request=request)

        pool = make_pool([K1, K2])
        with self.client(pool, transport=self.mock(handler)) as c, pytest.raises(self.http.ConnectError) as info:
            c.get("https://up.test/v1/models")
        assert K1 not in str(info.value) and K2 not in str(info.value)
        assert set(states(pool).values()) == {KeyState.ACTIVE}

    async def test_async_a_hanging_key_times_out_and_the_request_moves_on(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.HANG, K2: Behavior.OK})
        pool = make_pool([K1, K2])
        async with self.aclient(pool, timeout=self.http.Timeout(0.3)) as c:
            for _ in range(3):
                assert (await c.post(f"{up.url}/chat/completions", json=CHAT)).status_code == 200
        assert up.count(K2) == 3

    # -- event streams -------------------------------------------------------------------
    def test_an_event_stream_is_replayed_byte_for_byte(self, make_pool: Callable[..., Pool]) -> None:
        chunks = [SSE_BODY[:10], SSE_BODY[10:60], SSE_BODY[60:]]
        headers = {"content-type": "text/event-stream"}
        pool = make_pool([K1])
        handler = lambda r: self.http.Response(200, headers=headers, stream=self.chunked(chunks))
        with self.client(pool, transport=self.mock(handler)) as c, c.stream("POST", "https://up.test/v1/x") as r:
            got = list(r.iter_bytes())
        assert b"".join(got) == SSE_BODY
        rec = pool.keys()[0]
        assert rec.counters.successes == 1 and rec.counters.completion_tokens == 2

    async def test_async_an_event_stream_is_replayed_byte_for_byte(self, make_pool: Callable[..., Pool]) -> None:
        chunks = [SSE_BODY[:10], SSE_BODY[10:60], SSE_BODY[60:]]
        headers = {"content-type": "text/event-stream"}
        pool = make_pool([K1])
        handler = lambda r: self.http.Response(200, headers=headers, stream=self.chunked(chunks))
        async with self.aclient(pool, transport=self.mock(handler)) as c, c.stream("POST", "https://up.test/v1/x") as r:
            got = [b async for b in r.aiter_bytes()]
        assert b"".join(got) == SSE_BODY
        assert pool.keys()[0].counters.prompt_tokens == 3

    def test_an_error_in_the_first_event_fails_over(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.STREAM_ERROR, K2: Behavior.OK})
        pool = make_pool([K1, K2])
        with self.client(pool) as c:
            for _ in range(6):
                r = c.post(f"{up.url}/chat/completions", json=STREAM)
                assert r.status_code == 200 and b'"error"' not in r.content and r.content.endswith(b"[DONE]\n\n")
        assert up.count(K2) == 6
        assert states(pool)[K1] is KeyState.ACTIVE  # a server error says nothing against the key

    def test_when_every_stream_fails_the_caller_gets_the_error_event(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.STREAM_ERROR})
        pool = make_pool([K1])
        with self.client(pool) as c:
            r = c.post(f"{up.url}/chat/completions", json=STREAM)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.content.startswith(b'data: {"error"') and r.content.endswith(b"data: [DONE]\n\n")

    async def test_async_a_stream_cut_after_the_first_bytes_is_not_retried(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.STREAM_CUT})
        pool = make_pool([K1])
        async with self.aclient(pool) as c:
            r = await c.post(f"{up.url}/chat/completions", json=STREAM)
        assert r.status_code == 200 and up.count(K1) == 1
        assert b"Hello" in r.content and b'"code":"stream_cut"' in r.content
        rec = pool.keys()[0]
        assert rec.state is KeyState.ACTIVE and rec.counters.upstream_fault == 1

    def test_a_stream_closed_early_costs_the_key_nothing(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.OK})
        pool = make_pool([K1])
        with self.client(pool) as c, c.stream("POST", f"{up.url}/chat/completions", json=STREAM) as r:
            first = next(r.iter_lines())
        assert first.startswith("data: ")
        rec = pool.keys()[0]
        assert rec.counters.requests == 0
        assert pool.keypool.state.inflight(rec.id) == 0

    async def test_async_a_cancelled_request_releases_its_key_at_no_cost(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.HANG})
        pool = make_pool([K1])
        async with self.aclient(pool) as c:
            task = asyncio.create_task(c.post(f"{up.url}/chat/completions", json=CHAT))
            while not up.count(K1):
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        rec = (await asyncio.to_thread(pool.keys))[0]
        assert rec.state is KeyState.ACTIVE and rec.counters.requests == 0
        assert pool.keypool.state.inflight(rec.id) == 0

    # -- the sync design -----------------------------------------------------------------
    def test_a_sync_client_starts_no_thread_or_loop_per_request(
        self, upstream: Callable[..., ThreadedUpstream], make_pool: Callable[..., Pool]
    ) -> None:
        up = upstream({K1: Behavior.INVALID, K2: Behavior.OK})
        pool = make_pool([K1, K2])
        with self.client(pool) as c:
            c.post(f"{up.url}/chat/completions", json=CHAT)
            before = threading.active_count()
            for i in range(40):
                assert c.post(f"{up.url}/chat/completions", json=STREAM if i % 2 else CHAT).status_code == 200
            assert threading.active_count() == before

    def test_a_closed_pool_refuses_requests(self, make_pool: Callable[..., Pool]) -> None:
        pool = make_pool([K1])
        with self.client(pool, transport=self.mock(lambda r: self.http.Response(200))) as c:
            pool.close()
            with pytest.raises(RuntimeError, match="closed"):
                c.get("https://up.test/v1/models")
