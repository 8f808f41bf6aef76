"""Reading SSE as the gateway does: the first event (for in-band errors) and the usage chunk,
whatever way the stream is cut into chunks."""

from __future__ import annotations

from itertools import pairwise

import orjson
from hypothesis import given
from hypothesis import strategies as st

from keyrelay.providers import Usage, get_dialect
from keyrelay.providers.sse import UsageScanner, first_data, stream_ended


def _chunk(text: str) -> bytes:
    doc = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}], "usage": None}
    return b"data: " + orjson.dumps(doc) + b"\n\n"


USAGE = b'data: {"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}\n\n'
STREAM = b": keep-alive\n\n" + _chunk("Hel") + _chunk("lo") + USAGE + b"data: [DONE]\n\n"


def test_first_data_skips_comments_and_waits_for_a_whole_event() -> None:
    assert first_data(b": ping\n\ndata: {\"a\"") is None
    assert first_data(STREAM) == _chunk("Hel")[6:-2]


def test_first_data_joins_multi_line_data_and_reads_crlf() -> None:
    assert first_data(b"event: x\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n") == b'{"a":\n1}'


def test_first_data_of_an_in_band_error() -> None:
    err = b'data: {"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}\n\n'
    assert first_data(err) == err[6:-2]


def _scan(chunks: list[bytes]) -> Usage | None:
    scanner = UsageScanner(get_dialect("openai"))
    for c in chunks:
        if scanner.wants(c):
            scanner.feed(c)
    return scanner.usage


def test_usage_read_from_the_final_chunk() -> None:
    assert _scan([STREAM]) == Usage(9, 5)


def test_usage_null_chunks_only_give_no_usage() -> None:
    assert _scan([_chunk("a") + _chunk("b") + b"data: [DONE]\n\n"]) is None


def test_usage_with_crlf_line_ends() -> None:
    assert _scan([STREAM.replace(b"\n", b"\r\n")]) == Usage(9, 5)


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), unique=True, max_size=8))
def test_usage_found_however_the_stream_is_cut(cuts: list[int]) -> None:
    at = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in pairwise(at)]
    assert _scan(chunks) == Usage(9, 5)


@given(st.lists(st.integers(min_value=1, max_value=len(USAGE) + 13), unique=True, max_size=6))
def test_usage_found_when_only_the_last_event_names_it(cuts: list[int]) -> None:
    stream = b'data: {"choices":[]}\n\n' + USAGE + b"data: [DONE]\n\n"
    at = [0, *sorted(c for c in cuts if c < len(stream)), len(stream)]
    assert _scan([stream[a:b] for a, b in pairwise(at)]) == Usage(9, 5)


def test_chunks_whose_usage_is_null_are_not_decoded() -> None:
    scanner = UsageScanner(get_dialect("openai"))
    assert not scanner.wants(_chunk("a"))
    assert not scanner.wants(_chunk("a") + _chunk("b"))
    assert scanner.wants(_chunk("a") + USAGE)  # one null, one real: the real one is read
    assert scanner.wants(USAGE)


def test_usage_spelled_with_spaces_is_read_too() -> None:
    spaced = b'data: {"choices": [], "usage": null}\n\ndata: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}\n\n'
    assert _scan([spaced + b"data: [DONE]\n\n"]) == Usage(3, 4)
    assert _scan([b'data: {"choices": [], "usage": null}\n\n']) is None


# -- the last event of a stream: was it delivered? -----------------------------------------


def test_a_stream_ends_with_done_or_its_dialects_last_event() -> None:
    chunk = b'data: {"choices":[]}\n\n'
    assert stream_ended(chunk, b"data: [DONE]\n\n")
    assert stream_ended(b"", chunk + b"data: [DONE]\n\n")
    assert stream_ended(b"", b"data:[DONE]\r\n\r\n")
    assert stream_ended(b'data: {"x":1}\n\ndata: [DO', b"NE]\n\n")  # split over two chunks
    assert stream_ended(b"", b'event: response.completed\ndata: {"type":"response.completed"}\n\n')
    assert stream_ended(b"", b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert stream_ended(b"", b'data: {"type":"message_stop"}\n\n')


def test_a_stream_cut_before_its_last_event_has_not_ended() -> None:
    assert not stream_ended(b"", b'data: {"choices":[]}\n\n')
    assert not stream_ended(b"", b"data: [DONE]")  # the event is not complete yet
    assert not stream_ended(b"", b"")
    assert not stream_ended(b"data: [DONE]\n\n", b'data: {"late":1}\n\n')
    assert not stream_ended(b"", b'event: response.output_text.delta\ndata: {"delta":"x"}\n\n')
