"""The one relay flow: one client request over a pool, every decision made here and no I/O.

A driver (the aiohttp gateway, the httpx / httpx2 transports of library mode, a leaner HTTP
layer) does only the I/O and tells the flow what happened; the flow answers with what to do
next. Plain method calls, no coroutine or generator per step::

    ex = Exchange(pool, method, url, headers, body)
    reply = ex.start()                   # None: send an attempt (ex.url, ex.headers)
    while reply is None:
        try:
            up = send(ex.url, ex.headers, body)
        except network errors as exc:
            reply = ex.failed(exc)       # None again: the next key
            continue
        how = ex.head(up.status, up.headers)
        if how is READ:
            reply = ex.body(read_all(up))
        else:                            # PEEK (a stream) or PASS (a body we need not read)
            reply = ex.peek(next_chunk(up)) while it says MORE, or ex.passthrough()
    # a Reply: send it (``reply.error`` set: the upstream could not be reached, library mode
    # raises ``ex.scrubbed(reply.error)`` instead); a Stream: relay the rest through it

What is decided in one place here: the attempts (:class:`~keyrelay.runtime.attempts.Attempts`:
never the same key twice, the retry budget and deadline), the verdicts (the dialect's
classification), what a stream's first event says, the answers keyrelay makes itself (no key,
keys rejected, upstream unreachable), redaction of every rebuilt answer and of the headers, the
response marks (``x-keyrelay-attempts``, ``x-keyrelay-key``), the end of a stream and the
frame that closes a stream the upstream cut. Recording an outcome persists it (the pool's
writer), so a driver reports and is done.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping

from keyrelay.core.masking import redact
from keyrelay.core.model import Outcome, Verdict
from keyrelay.core.pool import Lease
from keyrelay.exceptions import NoKeyAvailable
from keyrelay.providers import Usage
from keyrelay.providers.base import rebase_url
from keyrelay.providers.json_stream import JsonArrayScanner, first_verdict
from keyrelay.providers.sse import FIRST_EVENT_LIMIT, first_data
from keyrelay.providers.usage import usage_of_json
from keyrelay.runtime import answers, redactor
from keyrelay.runtime.answers import answer_headers, local_location
from keyrelay.runtime.attempts import Attempts
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.stream import ARRAY_KIND, PLAIN_KIND, SSE_KIND, Stream

__all__ = ["MORE", "PASS", "PEEK", "READ", "Exchange", "Reply", "Stream", "Want", "answer_headers"]  # answer_headers: re-exported

class Want(enum.Enum):
    """What the flow wants next: to :data:`READ` an answer whole, :data:`PEEK` at a stream's
    start or :data:`PASS` it through (:meth:`Exchange.head`); :data:`MORE` of a stream's start
    (:meth:`Exchange.peek`)."""

    READ = 1
    PEEK = 2
    PASS = 3
    MORE = 4


READ, PEEK, PASS, MORE = Want.READ, Want.PEEK, Want.PASS, Want.MORE

_SSE = "text/event-stream"
_OK = Verdict.ok(200)
_EMPTY = Verdict(Outcome.UPSTREAM_FAULT, 200, message="empty stream", reason="empty stream")
_GONE = Verdict(Outcome.CLIENT_GONE)
_JSON = "application/json"

class Reply:
    """A whole answer for the caller. ``error``: the upstream could not be reached (library mode
    raises it, scrubbed; the gateway sends this 502)."""

    __slots__ = ("body", "error", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, error: BaseException | None = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.error = error


class Exchange:
    """One client request over one pool: its attempts, and what each answer means."""

    __slots__ = (
        "_array",
        "_base",
        "_buf",
        "_scan",
        "_target",
        "attempts",
        "body_bytes",
        "ctype",
        "dialect",
        "headers",
        "lease",
        "method",
        "pool",
        "secrets",
        "status",
        "up_headers",
        "url",
    )

    def __init__(
        self,
        pool: KeyPool,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Callable[[], bytes] = b"",
        *,
        origin: str | None = None,
    ) -> None:
        self.pool = pool
        self.dialect = pool.dialect
        self.method = method
        self._target = url  # where the pool's base URL sends it
        self._base = pool.settings.base_url
        #: the request headers of the attempt under way: the caller's (filtered by the driver)
        #: and the leased key's credentials
        self.headers = headers
        self.body_bytes = body
        self.attempts = Attempts(pool, body=body)
        self.attempts.origin = origin
        self.lease: Lease | None = None
        #: the URL of the attempt under way (a key with its own base URL goes there)
        self.url = url
        self.status = 0
        self.ctype = ""
        self.up_headers: Mapping[str, str] = {}
        self.secrets: tuple[str, ...] = ()  # every key tried: kept out of what the caller sees
        self._buf = b""  # a stream's bytes before its first event
        #: does this request ask for a streamed JSON array (Gemini's default stream)?
        self._array = self.dialect.array_streams and self.dialect.json_array_stream(*_path_and_query(url))
        self._scan: JsonArrayScanner | None = None  # that array's reader, once its head came

    # -- attempts --------------------------------------------------------------------------
    def start(self) -> Reply | None:
        """The first attempt (``None``: send it), or the 503 when no key may take the request."""
        try:
            lease = self.attempts.next()
            if lease is None:  # no attempt allowed at all (max_attempts = 0)
                raise self.pool.no_key()
        except NoKeyAvailable as exc:
            status, body, headers = answers.no_key(exc, self.dialect)
            headers["x-keyrelay-attempts"] = "0"
            return Reply(status, headers, body)
        self._use(lease)
        return None

    def _use(self, lease: Lease) -> None:
        self.lease = lease
        self.secrets += (lease.secret,)
        self.headers.update(self.dialect.auth_headers(lease.secret))  # the same names each attempt
        self.url = self._target if lease.base_url is None else rebase_url(self._target, self._base, lease.base_url)

    def _retry(self, verdict: Verdict) -> bool:
        """An attempt failed with ``verdict``: is the next one under way? (When it is, the failed
        attempt's answer is never built: only the last failure's can reach the caller.)"""
        lease = self.attempts.next() if self.attempts.should_retry(verdict) else None
        if lease is None:
            return False
        self._use(lease)
        return True

    def _final(self, last: Reply) -> Reply:
        """The caller's answer after the last attempt failed with ``last``."""
        attempts = self.attempts
        body = answers.keys_rejected(self.pool, attempts.last)
        if body is not None:  # the guard holds: the keys are not to blame, nor the caller's token
            last = Reply(answers.KEYS_REJECTED_STATUS, {"content-type": _JSON}, body)
        last.headers["x-keyrelay-attempts"] = str(attempts.count)
        if attempts.last_lease is not None:
            last.headers["x-keyrelay-key"] = attempts.last_lease.key_id
        return last

    def _record(self, verdict: Verdict, usage: Usage | None = None) -> None:
        lease = self.lease
        if lease is not None:
            self.lease = None
            self.attempts.record(lease, verdict, usage)

    def abandon(self) -> None:
        """The caller went away (or the driver gave up) mid-attempt: the key is released at no cost."""
        lease = self.lease
        if lease is not None:
            self.lease = None
            self.attempts.abandon(lease)

    # -- answers ---------------------------------------------------------------------------
    def failed(self, exc: BaseException, *, broke_off: bool = False) -> Reply | None:
        """The attempt's request could not be sent, or (``broke_off``) its answer broke off
        before we had it whole: a network error, counted against the attempt."""
        verdict = Verdict(Outcome.NETWORK_ERROR, message=type(exc).__name__, reason="network error")
        self._record(verdict)
        if self._retry(verdict):
            return None
        what = "upstream answer broke off" if broke_off else "upstream unreachable"
        body = answers.local_error(502, f"{what} ({type(exc).__name__})", "upstream_error", "upstream_unreachable",
                                   self.dialect)
        return self._final(Reply(502, {"content-type": _JSON}, body, exc))

    def head(self, status: int, headers: Mapping[str, str]) -> Want:
        """The head of the attempt's answer arrived: :data:`READ` it whole (errors, and answers
        that may carry one), :data:`PEEK` at a stream's first event, or :data:`PASS` it through
        (a 2xx that cannot carry an error: audio, files; a redirect)."""
        self.status, self.up_headers = status, headers
        ctype = self.ctype = headers.get("content-type", "")
        if status == 200 and ctype.startswith(_SSE):
            self._buf, self._scan = b"", None
            return PEEK
        if status == 200 and self._array and "json" in ctype:
            self._buf, self._scan = b"", JsonArrayScanner(self.dialect)
            return PEEK
        if status >= 400 or (200 <= status < 300 and (not ctype or "json" in ctype or ctype.startswith("text/"))):
            return READ
        return PASS

    def _marked(self, headers: dict[str, str], key_id: str) -> dict[str, str]:
        headers["x-keyrelay-attempts"] = str(self.attempts.count)
        headers["x-keyrelay-key"] = key_id
        return headers

    def body(self, data: bytes) -> Reply | None:
        """The whole answer (:data:`READ`): the caller's answer, or the next attempt (``None``)."""
        lease = self.lease
        assert lease is not None
        status = self.status
        verdict = self.dialect.classify(status, self.up_headers, data, self.pool.clock())
        if verdict.outcome is Outcome.OK:
            self._record(verdict, usage_of_json(self.dialect, self.ctype, data))
            return Reply(status, self._marked(answer_headers(self.up_headers), lease.key_id), data)
        self._record(verdict)
        if self._retry(verdict):
            return None
        clean = redactor.current().data(self.dialect.error_body(status, data, (lease.secret,)))
        headers = answer_headers(self.up_headers)
        headers["content-type"] = _JSON
        return self._final(Reply(status, headers, clean))

    def peek(self, chunk: bytes) -> Reply | Stream | Want | None:
        """A chunk of a stream's start (``b""``: it ended): :data:`MORE` (send the next), the
        :class:`Stream` to relay (its first event is fine), the caller's answer, or the next
        attempt (``None``: the first event was an error another key may not get)."""
        if self._scan is not None:
            return self._peek_array(chunk, self._scan)
        if chunk:
            buf = self._buf = self._buf + chunk if self._buf else chunk
            data = first_data(buf)
            if data is None:
                if len(buf) <= FIRST_EVENT_LIMIT:
                    return MORE
                verdict = _OK
            else:
                verdict = self.dialect.classify_event(data) or _OK
        else:
            buf = self._buf
            verdict = _OK if buf else _EMPTY
        if verdict.outcome is Outcome.OK:
            return self._stream(buf, SSE_KIND)
        return self._stream_failed(verdict, first_data(buf) or b"")

    def _peek_array(self, chunk: bytes, scan: JsonArrayScanner) -> Reply | Stream | Want | None:
        """:meth:`peek` for a streamed JSON array: its first element decides."""
        if chunk:
            out = scan.feed(chunk)
            if out:
                self._buf += out
            if scan.first is None and len(self._buf) + scan.held <= FIRST_EVENT_LIMIT:
                return MORE
        first = scan.first
        if first is None:
            verdict = _OK if self._buf or scan.held else _EMPTY
        else:
            verdict = first_verdict(self.dialect, first)
        if verdict.outcome is Outcome.OK:
            return self._stream(self._buf, ARRAY_KIND)
        return self._stream_failed(verdict, first or b"")

    def _stream_failed(self, verdict: Verdict, first: bytes) -> Reply | None:
        """A stream whose first event said no: the next attempt, or the caller's error answer."""
        lease = self.lease
        assert lease is not None
        self._record(verdict)
        if self._retry(verdict):
            return None
        status, ctype, failure = self.dialect.stream_failure(first, (lease.secret,))
        headers = answer_headers(self.up_headers)
        headers["content-type"] = ctype
        return self._final(Reply(status, headers, redactor.current().data(failure)))

    def passthrough(self) -> Stream:
        """An answer relayed as it comes (:data:`PASS`): counted as a success now. A redirect
        elsewhere loses its ``Location`` (see :func:`_local_location`)."""
        stream = self._stream(b"", PLAIN_KIND)
        if 300 <= self.status < 400 and "location" in stream.headers:
            where = local_location(stream.headers["location"], self.url)
            if where is None:
                del stream.headers["location"]
            else:
                stream.headers["location"] = where
        return stream

    def _stream(self, first: bytes, kind: int) -> Stream:
        """The attempt's answer, to be relayed as it arrives (``runtime/stream.py``)."""
        lease = self.lease
        assert lease is not None
        headers = self._marked(answer_headers(self.up_headers), lease.key_id)
        scan = self._scan if kind == ARRAY_KIND else None
        return Stream(self.status, headers, first, kind, self.dialect, self.attempts, self._record, self.abandon, scan)

    def scrubbed(self, exc: BaseException) -> str | None:
        """The text of ``exc`` with no key in it, or ``None`` when it had none."""
        text = str(exc)
        clean = redactor.current().text(redact(text, self.secrets))
        return None if clean == text else clean


def _path_and_query(url: str) -> tuple[str, str]:
    rest = url.partition("://")[2] or url
    path, _, query = ("/" + rest.partition("/")[2]).partition("?")
    return path, query
