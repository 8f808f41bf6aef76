"""The relay loop of library mode, written once for sync and async, httpx and httpx2.

:func:`relay_flow` is a generator that makes every decision and does no I/O (the way httpx
drives an auth flow): it yields a *step* — send this request, read that body, take the next
chunk, close, persist a transition — and the transport's driver performs it, with its own
library, sync or async, and sends back the result (or throws the exception in). The decisions
themselves are :class:`~keyrelay.runtime.attempts.Attempts`, the gateway's loop, driven the same way as in
``keyrelay.server.proxy``:

- each attempt swaps the request's credentials (``Authorization``, ``api-key``, ``x-api-key``)
  for the leased key's, on a copy of the request;
- an error answer (and a JSON 2xx, which may carry ``{"error": …}``) is read and classified;
  a ``text/event-stream`` 200 is read up to its first data event, and an error there fails over;
  otherwise the caller gets a stream that replays the peeked bytes and then the rest;
- never the same key twice, at most ``max_attempts`` keys within ``deadline``; a client error is
  returned as is; once the caller has the answer, nothing is retried;
- no key at the first attempt: a synthetic 503 in the OpenAI error shape (``Retry-After`` when a
  cooling key frees up soon, ``x-should-retry: false`` when none will by itself);
- attempts used up: the last upstream error, its body rebuilt by the dialect (no key material),
  or the last network error raised again (its text scrubbed of keys).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from keyrelay.client.pool import Pool
from keyrelay.core.headers import clean_raw
from keyrelay.core.masking import redact
from keyrelay.core.model import Outcome, Verdict
from keyrelay.core.pool import Lease
from keyrelay.providers import Usage
from keyrelay.providers.base import rebase_url
from keyrelay.providers.sse import FIRST_EVENT_LIMIT, first_data
from keyrelay.providers.usage import usage_of_json
from keyrelay.runtime import answers, redactor
from keyrelay.runtime.attempts import Attempts, NoKeyAvailable

__all__ = ["Begin", "Close", "Next", "Persist", "Read", "ReadRequest", "Relay", "Send", "Step", "relay_flow"]

_SSE = "text/event-stream"
#: response headers that no longer hold once we decoded the body (and set its length)
_DROP_DECODED = frozenset({b"content-encoding", b"content-length"})
_DROP_SIZED = _DROP_DECODED | {b"transfer-encoding"}
_OK = Verdict.ok(200)


# -- steps: what the driver must do ---------------------------------------------------------
@dataclass(slots=True)
class ReadRequest:
    request: Any  # → None (the body is buffered, so it can be sent again)


@dataclass(slots=True)
class Send:
    request: Any  # → the upstream response (headers read, body not)


@dataclass(slots=True)
class Read:
    response: Any  # → the whole (decoded) body


@dataclass(slots=True)
class Begin:
    response: Any  # → an iterator of the (decoded) body's chunks


@dataclass(slots=True)
class Next:
    chunks: Any  # → the next chunk, b"" at the end


@dataclass(slots=True)
class Close:
    response: Any  # → None


@dataclass(slots=True)
class Persist:
    transition: Any  # → None (sync: handed to the pool's loop; async: awaited there)
    verdict: Verdict
    version: int


Step = ReadRequest | Send | Read | Begin | Next | Close | Persist
Flow = Generator[Step, Any, Any]
#: (inner response, chunk iterator, peeked bytes, finish(verdict or None, usage)) → a byte stream
StreamFactory = Callable[[Any, Any, bytes, Callable[[Verdict | None, Usage | None], None]], Any]


class Relay:
    """What the flow needs: the pool, the HTTP library (``httpx`` or ``httpx2``) and how to wrap
    a replayed stream for the caller (a sync or an async byte stream of that library)."""

    def __init__(self, pool: Pool, http: Any, make_stream: StreamFactory) -> None:
        self.pool = pool
        self.keypool = pool.keypool
        self.dialect = pool.dialect
        self.http = http
        self.network_errors: tuple[type[BaseException], ...] = (http.TransportError,)
        self.make_stream = make_stream
        self._strip = frozenset(n.encode() for n in self.dialect.auth_header_names)
        self._auth: dict[str, list[tuple[bytes, bytes]]] = {}
        self._query = self.dialect.credential_query

    # -- requests ------------------------------------------------------------------------
    def attempt_request(self, request: Any, secret: str, base_url: str | None = None) -> Any:
        """A copy of ``request`` that presents ``secret`` and none of the caller's credentials
        (the caller's request object never holds a pool key), sent to the key's own ``base_url``
        when it has one."""
        auth = self._auth.get(secret)
        if auth is None:
            if len(self._auth) > 10_000:
                self._auth.clear()
            auth = self._auth[secret] = [(k.encode(), v.encode()) for k, v in self.dialect.auth_headers(secret).items()]
        strip = self._strip
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in strip]
        headers += auth
        url = request.url
        if base_url is not None:
            url = self.http.URL(rebase_url(str(url), self.keypool.settings.base_url, base_url))
        if self._query and self._query in url.params:  # Gemini's ?key=: the caller's, never sent
            url = url.copy_remove_param(self._query)
        return self.http.Request(request.method, url, headers=headers, stream=request.stream, extensions=request.extensions)

    # -- answers -------------------------------------------------------------------------
    def _headers(self, resp: Any, attempts: Attempts, key_id: str, length: int | None) -> list[tuple[bytes, bytes]]:
        """The upstream's headers for a body we decoded (and maybe rebuilt), plus ours."""
        drop = _DROP_SIZED if length is not None else _DROP_DECODED
        raw = resp.headers.raw
        clean = clean_raw(raw, redactor.current())
        h = [(k, v) for k, v in (raw if clean is None else clean) if k.lower() not in drop]
        if length is not None:
            h.append((b"content-length", str(length).encode()))
        h.append((b"x-keyrelay-attempts", str(attempts.count).encode()))
        h.append((b"x-keyrelay-key", key_id.encode()))
        return h

    def body_response(self, resp: Any, body: bytes, attempts: Attempts, key_id: str, status: int | None = None) -> Any:
        return self.http.Response(
            resp.status_code if status is None else status,
            headers=self._headers(resp, attempts, key_id, len(body)),
            stream=self.http.ByteStream(body),
            extensions=resp.extensions,
        )

    def read_response(self, resp: Any, body: bytes, attempts: Attempts, key_id: str, started: float) -> Any:
        """A read answer handed back as it is (its body is decoded and cached): the cheap path.
        Its ``elapsed`` is set here, since the client will find nothing left to read."""
        if resp.headers.get("content-encoding"):  # rare: rebuild, so no header claims gzip
            return self.body_response(resp, body, attempts, key_id)
        self.clean_headers(resp)
        resp.headers["x-keyrelay-attempts"] = str(attempts.count)
        resp.headers["x-keyrelay-key"] = key_id
        resp.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
        return resp

    def error_response(self, resp: Any, body: bytes, attempts: Attempts, lease: Lease) -> Any:
        safe = redactor.current().data(self.dialect.error_body(resp.status_code, body, (lease.secret,)))
        out = self.body_response(resp, safe, attempts, lease.key_id)
        out.headers["content-type"] = "application/json"
        return out

    def sse_error_response(self, resp: Any, first: bytes, attempts: Attempts, lease: Lease) -> Any:
        status, ctype, body = self.dialect.stream_failure(first_data(first) or b"", (lease.secret,))
        out = self.body_response(resp, redactor.current().data(body), attempts, lease.key_id, status)
        out.headers["content-type"] = ctype
        return out

    def stream_response(self, resp: Any, chunks: Any, first: bytes, attempts: Attempts, lease: Lease) -> Any:
        def finish(verdict: Verdict | None, usage: Usage | None) -> None:
            if attempts.lease is not lease:
                return
            if verdict is None:  # closed early: the caller went away, at no cost to the key
                attempts.abandon(lease)
                return
            t = attempts.record(lease, verdict, usage)
            if t is not None:
                self.pool.persist_later(t, verdict, lease.version)

        stream = self.make_stream(resp, chunks, first, finish)
        return self.http.Response(
            resp.status_code,
            headers=self._headers(resp, attempts, lease.key_id, None),
            stream=stream,
            extensions=resp.extensions,
        )

    def clean_headers(self, resp: Any) -> None:
        """Drop ``resp``'s debugging headers and redact the rest, as the gateway does
        (``keyrelay.core.headers``); nothing is rebuilt when nothing needs it."""
        clean = clean_raw(resp.headers.raw, redactor.current())
        if clean is not None:
            resp.headers = self.http.Headers(clean)

    def passthrough(self, resp: Any, attempts: Attempts, key_id: str) -> Any:
        self.clean_headers(resp)
        resp.headers["x-keyrelay-attempts"] = str(attempts.count)
        resp.headers["x-keyrelay-key"] = key_id
        return resp

    def no_key_response(self, exc: NoKeyAvailable) -> Any:
        status, body, headers = answers.no_key(exc, self.dialect)
        headers |= {"content-length": str(len(body)), "x-keyrelay-attempts": "0"}
        return self.http.Response(status, headers=headers, stream=self.http.ByteStream(body))

    def keys_rejected_response(self, last: Any, attempts: Attempts) -> Any:
        """The last answer, or a 502 ``upstream_keys_rejected`` when the pool's correlated-failure
        guard holds its keys back (``keyrelay.runtime.answers``)."""
        body = answers.keys_rejected(self.keypool, attempts.last)
        if body is None or attempts.last_lease is None:
            return last
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers.append((b"x-keyrelay-key", attempts.last_lease.key_id.encode()))
        return self.http.Response(answers.KEYS_REJECTED_STATUS, headers=headers, stream=self.http.ByteStream(body))

    def usage(self, ctype: str, data: bytes) -> Usage | None:
        return usage_of_json(self.dialect, ctype, data)

    def scrub(self, exc: BaseException, secrets: tuple[str, ...]) -> BaseException:
        """``exc``, or a copy whose text holds no key (the original is then not chained)."""
        text = str(exc)
        clean = redactor.current().text(redact(text, secrets))
        if clean == text:
            return exc
        try:
            copy = type(exc)(clean)
        except Exception:  # noqa: BLE001 — an exception type that wants other arguments
            copy = self.http.TransportError(clean)
        request = getattr(exc, "_request", None)
        if request is not None:
            copy._request = request  # type: ignore[attr-defined]
        return copy


def _wants_body(status: int, ctype: str) -> bool:
    """Must this answer be read before it is judged? Errors, and 2xx that may carry an error."""
    return status >= 400 or (200 <= status < 300 and (not ctype or "json" in ctype or ctype.startswith("text/")))


def _network(exc: BaseException) -> Verdict:
    return Verdict(Outcome.NETWORK_ERROR, message=type(exc).__name__, reason="network error")


def _record(r: Relay, attempts: Attempts, lease: Lease, verdict: Verdict, usage: Usage | None = None) -> Flow:
    t = attempts.record(lease, verdict, usage)
    if t is not None:
        yield Persist(t, verdict, lease.version)


def _peek(r: Relay, chunks: Any) -> Generator[Step, Any, tuple[bytes, Verdict]]:
    """Read up to the first data event, and classify it."""
    buf = b""
    while True:
        chunk = yield Next(chunks)
        if not chunk:
            break
        buf += chunk
        data = first_data(buf)
        if data is not None:
            v = r.dialect.classify_event(data)
            return buf, v if v is not None else _OK
        if len(buf) > FIRST_EVENT_LIMIT:
            break
    if not buf:
        return buf, Verdict(Outcome.UPSTREAM_FAULT, 200, message="empty stream", reason="empty stream")
    return buf, _OK


def relay_flow(r: Relay, request: Any) -> Flow:
    """One request over the pool: returns the response for the caller (or raises)."""
    r.pool.check_open()
    yield ReadRequest(request)
    attempts = Attempts(r.keypool, body=lambda: request.content)
    attempts.origin = str(request.url)
    try:
        lease = attempts.next()
    except NoKeyAvailable as exc:
        return r.no_key_response(exc)
    last: Any = None  # the answer so far: a response, or a network error to raise
    secrets: tuple[str, ...] = ()
    while lease is not None:
        secrets += (lease.secret,)
        started = time.perf_counter()
        try:
            resp = yield Send(r.attempt_request(request, lease.secret, lease.base_url))
        except r.network_errors as exc:
            verdict = _network(exc)
            yield from _record(r, attempts, lease, verdict)
            last = exc
            lease = attempts.next() if attempts.should_retry(verdict) else None
            continue
        except BaseException:
            attempts.abandon(lease)
            raise
        status, ctype = resp.status_code, resp.headers.get("content-type", "")
        try:
            if status == 200 and ctype.startswith(_SSE):
                chunks = yield Begin(resp)
                first, verdict = yield from _peek(r, chunks)
                if verdict.outcome is Outcome.OK:
                    return r.stream_response(resp, chunks, first, attempts, lease)
                yield Close(resp)
                yield from _record(r, attempts, lease, verdict)
                last = r.sse_error_response(resp, first, attempts, lease)
            elif _wants_body(status, ctype):
                data = yield Read(resp)
                verdict = r.dialect.classify(status, resp.headers, data, r.keypool.clock())
                if verdict.outcome is Outcome.OK:
                    yield from _record(r, attempts, lease, verdict, r.usage(ctype, data))
                    return r.read_response(resp, data, attempts, lease.key_id, started)
                yield from _record(r, attempts, lease, verdict)
                last = r.error_response(resp, data, attempts, lease)
            else:  # a 2xx body that cannot carry an error (audio, files), or a redirect
                verdict = Verdict.ok(status)
                yield from _record(r, attempts, lease, verdict)
                return r.passthrough(resp, attempts, lease.key_id)
        except r.network_errors as exc:  # the answer broke off before we had it whole
            verdict = _network(exc)
            yield Close(resp)
            if attempts.lease is lease:
                yield from _record(r, attempts, lease, verdict)
            last = exc
        except BaseException as exc:
            if attempts.lease is lease:
                attempts.abandon(lease)
            if not isinstance(exc, GeneratorExit):
                yield Close(resp)
            raise
        lease = attempts.next() if attempts.should_retry(verdict) else None
    if isinstance(last, BaseException):
        raise r.scrub(last, secrets)
    last = r.keys_rejected_response(last, attempts)
    last.headers["x-keyrelay-attempts"] = str(attempts.count)
    return last
