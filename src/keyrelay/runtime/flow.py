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
import time
from collections.abc import Callable, Mapping

from keyrelay.core.headers import VISIBLE, visible_name
from keyrelay.core.masking import redact
from keyrelay.core.model import Outcome, Verdict
from keyrelay.core.pool import Lease
from keyrelay.exceptions import NoKeyAvailable
from keyrelay.providers import Usage
from keyrelay.providers.base import rebase_url
from keyrelay.providers.json_stream import JsonArrayScanner, first_verdict
from keyrelay.providers.sse import FIRST_EVENT_LIMIT, UsageScanner, first_data, stream_ended
from keyrelay.providers.usage import usage_of_json
from keyrelay.runtime import answers, redactor
from keyrelay.runtime.attempts import Attempts
from keyrelay.runtime.pool import KeyPool
from keyrelay.runtime.stream_guard import StreamGuard

__all__ = ["MORE", "PASS", "PEEK", "READ", "Exchange", "Reply", "Stream", "Want", "answer_headers"]

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

def answer_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    """The upstream's answer headers a caller may see, by lower-case name: hop-by-hop,
    debugging-only and credential headers dropped (``core/headers.py``), every value kept
    redacted of the pools' keys (``WWW-Authenticate`` may name the key; a value seen clean
    before costs a dict lookup)."""
    out = {}
    known = VISIBLE.get
    r = redactor.current()
    clean, seen = r.value, r.memo
    for k, v in upstream.items():
        name = known(k)
        if name is None:
            name = visible_name(k)
        if name:
            out[name] = v if v in seen else clean(v)
    return out


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
            return Stream(self, buf, _SSE_KIND)
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
            return Stream(self, self._buf, _ARRAY_KIND)
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
        stream = Stream(self, b"", _PLAIN_KIND)
        if 300 <= self.status < 400 and "location" in stream.headers:
            where = _local_location(stream.headers["location"], self.url)
            if where is None:
                del stream.headers["location"]
            else:
                stream.headers["location"] = where
        return stream

    def scrubbed(self, exc: BaseException) -> str | None:
        """The text of ``exc`` with no key in it, or ``None`` when it had none."""
        text = str(exc)
        clean = redactor.current().text(redact(text, self.secrets))
        return None if clean == text else clean


_PLAIN_KIND, _SSE_KIND, _ARRAY_KIND = 0, 1, 2


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return scheme.lower() + "://" + rest.partition("/")[0].partition("?")[0].lower()


def _local_location(location: str, url: str) -> str | None:
    """Where an upstream's redirect may send the caller: a path on the same upstream, as a
    relative reference; ``None`` for another host. A caller that followed it there would carry
    credentials to a stranger — in library mode a pool key, since the SDK's follow-up request
    comes back through the transport, which adds one (and a gateway caller, its keyrelay token)."""
    if location.startswith("/") and not location.startswith("//"):
        return location
    if "://" in location and _origin(location) == _origin(url):
        rest = location.partition("://")[2]
        return "/" + rest.partition("/")[2] if "/" in rest else "/"
    return None


def _path_and_query(url: str) -> tuple[str, str]:
    rest = url.partition("://")[2] or url
    path, _, query = ("/" + rest.partition("/")[2]).partition("?")
    return path, query


class Stream:
    """An answer relayed as it arrives, after its first event was found fine (or a body passed
    through). The driver sends :attr:`status`, :attr:`headers` and :attr:`first`, then each
    upstream chunk through :meth:`chunk`, and at the end what :meth:`end` or :meth:`cut` return;
    :meth:`gone` when the caller hung up. The outcome is recorded once, at the end.

    Three kinds: an SSE stream (keys kept out of in-band error events, usage scanned, its end
    event watched), a streamed JSON array (Gemini: whole elements only, the latest usage, closed
    with an error element when cut) and a body passed through as it is."""

    __slots__ = (
        "_array", "_before", "_ex", "_guard", "_kind", "_last", "_lease", "_scanner", "first", "headers", "status",
    )

    def __init__(self, ex: Exchange, first: bytes, kind: int) -> None:
        lease = ex.lease
        assert lease is not None
        self._ex = ex
        self._lease: Lease | None = lease
        self._kind = kind
        self.status = ex.status
        self.headers = ex._marked(answer_headers(ex.up_headers), lease.key_id)
        self._before, self._last = b"", first
        self._guard = StreamGuard()  # keys out of in-band error events after the first byte
        self._scanner: UsageScanner | None = None
        self._array = ex._scan if kind == _ARRAY_KIND else None
        ex.attempts.first_byte = time.perf_counter()
        if kind == _SSE_KIND:
            self._scanner = UsageScanner(ex.dialect)
            self._scanner.feed(first)
            self.first = self._guard.pass_(first)
        elif kind == _ARRAY_KIND:  # whole elements only (json_stream.py): a key is never split
            self.first = redactor.current().data(first) if b"error" in first else first
        else:
            self.first = first
            ex._record(Verdict.ok(ex.status))
            self._lease = None

    def chunk(self, data: bytes) -> bytes:
        """What of an upstream chunk the caller gets now."""
        if self._kind == _SSE_KIND:
            self._before, self._last = self._last, data
            scanner = self._scanner
            if scanner is not None and scanner.wants(data):
                scanner.feed(data)
            guard = self._guard
            if guard.held or not data.endswith(b"\n\n") or b"error" in data:
                return guard.pass_(data)
            return data
        if self._array is not None:
            out = self._array.feed(data)
            return redactor.current().data(out) if b"error" in out else out
        return data

    def end(self) -> bytes:
        """The upstream ended the answer: what is left to send; a success recorded (a JSON array
        that never closed was cut: its error element goes out and the key's fault is recorded)."""
        if self._array is not None and not self._array.ended():
            return self.cut(EOFError("the array never closed"))
        self._finish(_OK)
        return self._guard.rest() if self._kind == _SSE_KIND else b""

    def cut(self, exc: BaseException) -> bytes:
        """The upstream broke the answer off (or stalled): too late to fail over. What is left to
        send, ending with the dialect's error frame; the key's upstream fault recorded."""
        self._finish(Verdict(Outcome.UPSTREAM_FAULT, 200, message=type(exc).__name__, reason="stream cut"))
        if self._kind == _SSE_KIND:
            return self._guard.rest() + self._ex.dialect.stream_cut_event()
        if self._array is not None:
            return self._array.cut_tail()
        return b""

    def delivered(self) -> bool:
        """Did the caller get the stream's last event? (Then its hanging up costs nothing.)"""
        if self._array is not None:
            return self._array.ended()
        return stream_ended(self._before, self._last) or self._ex.dialect.stream_end in self._last

    def gone(self) -> bool:
        """The caller hung up: a stream whose last event it had is a success, any other costs the
        key nothing. True when it was counted a success."""
        if self._lease is None:
            return self._ex.attempts.last is not None and self._ex.attempts.last.outcome is Outcome.OK
        if self.delivered():
            self._finish(_OK)
            return True
        self._ex.abandon()
        self._lease = None
        return False

    def _finish(self, verdict: Verdict) -> None:
        if self._lease is not None:
            self._lease = None
            usage = self._scanner.usage if self._scanner is not None else None
            if self._array is not None:
                usage = self._array.usage
            self._ex._record(verdict, usage)
