"""Server-sent events, as far as the gateway needs to read them: the first event of a stream
(to fail over on an in-band error before anything reached the client) and the usage chunk."""

from __future__ import annotations

import orjson

from keyrelay.providers.base import Dialect, Usage

__all__ = ["FIRST_EVENT_LIMIT", "UsageScanner", "first_data", "stream_ended"]

FIRST_EVENT_LIMIT = 64 * 1024
_NO_USAGE = b'"usage":null'  # as OpenAI writes it; other spellings are decoded to find out


def _normal(buf: bytes) -> bytes:
    """Line ends as ``\n`` (OpenAI sends ``\n``; the spec also allows ``\r\n``)."""
    return buf.replace(b"\r\n", b"\n") if b"\r" in buf else buf


def _data_of(event: bytes) -> bytes | None:
    """The ``data`` payload of one event (its ``data:`` lines joined), or ``None``."""
    if event.startswith(b"data: ") and b"\n" not in event:  # the usual one-line event
        return event[6:]
    lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def first_data(buf: bytes) -> bytes | None:
    """The ``data`` payload of the first event that has one, or ``None`` if none is complete yet."""
    end = buf.find(b"\n\n")
    if end >= 0 and buf.startswith(b"data: ") and buf.find(b"\n", 6, end) < 0 and buf.find(b"\r", 6, end) < 0:
        return buf[6:end]  # the usual first event: one data line
    if b"\r" in buf:
        buf = _normal(buf)
        end = buf.find(b"\n\n")
    start = 0
    while end >= 0:
        data = _data_of(buf[start:end])
        if data is not None:
            return data
        start = end + 2
        end = buf.find(b"\n\n", start)
    return None


#: how the last event of a finished stream starts: OpenAI's ``data: [DONE]`` (chat, completions),
#: the Responses API's ``response.completed`` and Anthropic's ``message_stop``
_END_EVENTS = (b"data: [DONE]", b"data:[DONE]", b"event: response.completed", b"event: message_stop")
_END_TYPES = (b'{"type":"response.completed"', b'{"type":"message_stop"')


def stream_ended(before: bytes, last: bytes) -> bool:
    """Did the bytes written so far (the last two chunks, ``before`` and ``last``) end with the
    event that closes a stream? Then the caller had the whole answer, even if it hangs up before
    the upstream ends the body. Asked once per stream, when the client goes away."""
    buf = _normal(before[-4096:] + last)
    if not buf.endswith(b"\n\n"):
        return False
    cut = buf.rfind(b"\n\n", 0, len(buf) - 2)  # the end of the event before the last one
    event = buf[cut + 2 :] if cut >= 0 else buf
    if event.startswith(_END_EVENTS):
        return True
    data = _data_of(event[:-2])
    return data is not None and (data == b"[DONE]" or data.startswith(_END_TYPES))


class UsageScanner:
    """Watches a passing stream for the chunk that carries ``usage`` (OpenAI sends it last when
    ``stream_options.include_usage`` is set) without buffering the stream."""

    __slots__ = ("_key", "_tail", "dialect", "usage")

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.usage: Usage | None = None
        self._tail = b""
        self._key = dialect.usage_key  # b'"usage"'; Gemini's also finds "usageMetadata"

    def wants(self, chunk: bytes) -> bool:
        """Is this chunk worth feeding? (It may carry usage, completes a partial event, or ends
        inside one.) Upstreams send whole events per chunk as a rule, so most chunks are not:
        with ``include_usage`` OpenAI puts ``"usage":null`` in every chunk but the last."""
        if self._tail or not chunk.endswith(b"\n\n"):
            return True
        n = chunk.count(self._key)
        return n > 0 and n != chunk.count(_NO_USAGE)

    def feed(self, chunk: bytes) -> None:
        buf = self._tail + chunk if self._tail else chunk
        if b"\r" in buf:
            buf = _normal(buf)
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self._tail = buf[-FIRST_EVENT_LIMIT:]
            return
        self._tail = buf[cut + 2 :][-FIRST_EVENT_LIMIT:] if cut + 2 < len(buf) else b""
        end, key, found = cut, self._key, None
        while (at := buf.rfind(key, 0, end)) >= 0:  # from the last complete event back
            before = buf.rfind(b"\n\n", 0, at)
            start = before + 2 if before >= 0 else 0
            if not buf.startswith(_NO_USAGE, at):
                u = self.dialect.usage_at(buf, at)
                if u is None or not (u.prompt_tokens or u.completion_tokens):
                    u = self._read(buf[start : buf.find(b"\n\n", at)])
                if u is not None and (u.prompt_tokens or u.completion_tokens):
                    found = u if found is None else _fill(found, u)
                    if found.prompt_tokens and found.completion_tokens:
                        break  # whole: OpenAI's one usage chunk (Anthropic's come in two events)
            end = start
        if found is not None:
            self.usage = found if self.usage is None else _fill(found, self.usage)

    def _read(self, event: bytes) -> Usage | None:
        """The usage one event carries, if any."""
        data = _data_of(event)
        if not data or data == b"[DONE]":
            return None
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return self.dialect.usage(doc) if isinstance(doc, dict) else None


def _fill(newer: Usage, older: Usage) -> Usage:
    """``newer``, its missing counts taken from ``older`` (Anthropic's ``message_delta`` has the
    output tokens, its ``message_start`` the input tokens)."""
    if newer.prompt_tokens and newer.completion_tokens:
        return newer
    return Usage(newer.prompt_tokens or older.prompt_tokens, newer.completion_tokens or older.completion_tokens)
