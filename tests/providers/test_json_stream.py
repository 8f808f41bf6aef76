"""Gemini's streamed JSON array (``:streamGenerateContent`` without ``alt=sse``) read as it
arrives: the first element, the usage, the end, and what a client sees when the upstream breaks
off, whatever the chunk boundaries.

The shapes follow captured answers: pretty-printed GenerateContentResponse elements parted by a
comma on its own line (caugner/gemdn src/fixtures.rs) or by ``\\r\\n,`` (Google's wire), thought
parts with ``thoughtsTokenCount`` (flachesis/gemini-rust#29), an error element after candidates
(the same issue) and an array holding only an error (gemdn's ``EXAMPLE_ERROR``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from keyrelay.core.model import Outcome
from keyrelay.providers.base import Usage
from keyrelay.providers.gemini import GeminiDialect
from keyrelay.providers.json_stream import CUT_ELEMENT, JsonArrayScanner, first_element, first_verdict

D = GeminiDialect()


def _usage(prompt: int, done: int, thoughts: int = 0) -> dict[str, Any]:
    u: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": done, "totalTokenCount": prompt + done + thoughts,
                         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
    if thoughts:
        u["thoughtsTokenCount"] = thoughts
    return u


def _text(text: str, thought: bool = False, finish: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"text": text} | ({"thought": True} if thought else {})
    cand: dict[str, Any] = {"content": {"parts": [part], "role": "model"}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return cand


THOUGHT = {"candidates": [_text("**Examining API Functions**\n\nI'm listing `default_api`.\n\n\n", thought=True)],
           "usageMetadata": _usage(990, 0, 67), "modelVersion": "gemini-2.5-flash", "responseId": "YhP-1"}
#: brackets, braces, escaped quotes, a string ending in a backslash, non-ASCII: none of it is structure
TRICKY = {"candidates": [_text('He said "]}" and {[ then C:\\dir\\')], "usageMetadata": _usage(990, 20, 67),
          "modelVersion": "gemini-2.5-flash", "responseId": "YhP-1"}
MORE = {"candidates": [_text("caf\u00e9 \u2014 \U0001f600 [1, 2] {\"a\": \"b\"} \\\" \\\\")], "usageMetadata": _usage(990, 48, 67),
        "modelVersion": "gemini-2.5-flash", "responseId": "YhP-1"}
#: the last element: its usage first, then text that spells a usage object of its own
LAST = {"usageMetadata": _usage(990, 120, 67),
        "candidates": [_text('"usageMetadata": {"promptTokenCount": 999999, "candidatesTokenCount": 999999}', finish="STOP")],
        "modelVersion": "gemini-2.5-flash", "responseId": "YhP-1"}
INTERNAL = {"error": {"code": 500, "message": "An internal error has occurred. Please retry or report in "
                      "https://developers.generativeai.google/guide/troubleshooting", "status": "INTERNAL"}}
OVERLOADED = {"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}

#: (opening, separator, closing) of the array around pretty-printed elements
FRAMES = {
    "google-wire": (b"[", b"\r\n,", b"\r\n]"),
    "comma-own-line": (b"[", b"\n  ,\n  ", b"\n  ]"),
    "compact": (b"[", b",", b"]"),
}


def _array(elements: list[dict[str, Any]], frame: str = "google-wire", indent: bool = True) -> bytes:
    opening, sep, closing = FRAMES[frame]
    opt = orjson.OPT_INDENT_2 if indent and frame != "compact" else 0
    return opening + sep.join(orjson.dumps(e, option=opt) for e in elements) + closing


ANSWER = [THOUGHT, TRICKY, MORE, LAST]
FINAL = Usage(990, 120 + 67)  # completion = candidates + thoughts


def _relay(data: bytes, pieces: list[int], scanner: JsonArrayScanner | None = None) -> tuple[JsonArrayScanner, bytes]:
    """Feed ``data`` cut at ``pieces`` (offsets); returns the scanner and what it handed back."""
    s = scanner or JsonArrayScanner(D)
    out, last = [], 0
    for cut in [*pieces, len(data)]:
        out.append(s.feed(data[last:cut]))
        last = cut
    return s, b"".join(out)


# -- first_element ----------------------------------------------------------------------------

@pytest.mark.parametrize("frame", list(FRAMES))
def test_first_element_is_found_once_its_closing_brace_arrived_and_not_before(frame: str) -> None:
    data = _array([TRICKY, *ANSWER], frame)
    first = first_element(data)
    assert first is not None and orjson.loads(first) == TRICKY
    end = data.index(first) + len(first)
    assert all(first_element(data[:n]) is None for n in range(end))
    assert first_element(data[:end]) == first


def test_first_element_of_an_error_array_and_of_a_lone_error_object() -> None:
    body = b'[{\n    "error": {\n      "code": 503,\n      "message": "The model is overloaded.",\n      "status": "UNAVAILABLE"\n    }\n  }\n  ]'
    first = first_element(body)
    assert first is not None and orjson.loads(first)["error"]["code"] == 503
    lone = orjson.dumps(OVERLOADED)
    assert first_element(lone) == lone
    assert first_element(b"") is None and first_element(b"[") is None and first_element(b"[]") is None


# -- the scanner, whatever the chunk boundaries -------------------------------------------------

@pytest.mark.parametrize("frame", list(FRAMES))
def test_byte_by_byte_the_client_gets_every_byte_and_the_final_usage(frame: str) -> None:
    data = _array(ANSWER, frame)
    s, out = _relay(data, list(range(1, len(data))))
    assert out == data
    assert s.usage == FINAL
    assert s.ended() and s.cut_tail() == b""
    assert s.first is not None and orjson.loads(s.first) == THOUGHT


def test_every_split_into_two_pieces_gives_the_same_answer() -> None:
    data = _array(ANSWER)
    for n in range(len(data) + 1):
        s, out = _relay(data, [n])
        assert out == data, n
        assert s.usage == FINAL, n
        assert s.ended(), n


def test_usage_is_the_latest_elements_and_grows_as_elements_arrive() -> None:
    data = _array(ANSWER)
    s = JsonArrayScanner(D)
    seen = []
    for element in ANSWER:
        raw = orjson.dumps(element, option=orjson.OPT_INDENT_2)
        end = data.index(raw) + len(raw)
        s.feed(data[s._walk.pos : end])
        seen.append(s.usage)
    assert seen == [Usage(990, 67), Usage(990, 87), Usage(990, 115), FINAL]
    assert not s.ended()  # the closing "]" has not come
    s.feed(data[s._walk.pos :])
    assert s.ended()


def test_no_usage_when_no_element_carries_one() -> None:
    s, _ = _relay(_array([{"candidates": [_text("hi", finish="STOP")]}]), [3, 9])
    assert s.usage is None and s.ended()


# -- held back, and what a client parses when the upstream breaks off -------------------------------

@pytest.mark.parametrize("frame", list(FRAMES))
def test_a_cut_anywhere_leaves_the_client_a_closed_array_ending_in_a_gemini_error(frame: str) -> None:
    data = _array(ANSWER, frame)
    cut_error = orjson.loads(CUT_ELEMENT)
    for n in range(len(data)):
        s, out = _relay(data[:n], [n // 2])  # the bytes up to n, in two pieces
        assert data.startswith(out)
        doc = orjson.loads(out + s.cut_tail())
        assert doc[-1] == cut_error and list(doc[-1]) == ["error"], n  # google-genai's '{"error":' test
        assert doc[:-1] == ANSWER[: len(doc) - 1], n  # whole elements only, none half
        assert s.held == n - len(out)


@pytest.mark.parametrize("frame", list(FRAMES))
def test_one_element_per_chunk_as_google_writes_them_and_a_cut_after_any_of_them(frame: str) -> None:
    opening, sep, closing = FRAMES[frame]
    opt = orjson.OPT_INDENT_2 if frame != "compact" else 0
    writes = [(opening if i == 0 else sep) + orjson.dumps(e, option=opt) for i, e in enumerate(ANSWER)] + [closing]
    s, sent = JsonArrayScanner(D), b""
    for n, chunk in enumerate(writes):
        assert s.feed(chunk) == chunk  # nothing waits
        sent += chunk
        if n < len(ANSWER):
            assert orjson.loads(sent + s.cut_tail()) == [*ANSWER[: n + 1], orjson.loads(CUT_ELEMENT)]
    assert s.ended() and s.usage == FINAL and s.first is not None and orjson.loads(s.first) == THOUGHT


def test_a_proxy_merging_and_splitting_googles_writes_changes_nothing() -> None:
    writes = [b"[" + orjson.dumps(e, option=orjson.OPT_INDENT_2) for e in ANSWER[:1]]
    writes += [b"\r\n," + orjson.dumps(e, option=orjson.OPT_INDENT_2) for e in ANSWER[1:]] + [b"\r\n]"]
    merged = [writes[0] + writes[1], writes[2][:40], writes[2][40:], writes[3], writes[4]]
    s = JsonArrayScanner(D)
    assert s.feed(merged[0]) == merged[0]
    assert s.feed(merged[1]) == b"\r\n,"  # the separator goes, the element's start waits
    assert orjson.loads(merged[0] + b"\r\n," + s.cut_tail()) == [*ANSWER[:2], orjson.loads(CUT_ELEMENT)]
    assert s.feed(merged[2]) == (merged[1] + merged[2])[3:]
    assert [s.feed(c) for c in merged[3:]] == merged[3:]
    assert s.ended() and s.usage == FINAL


def test_elements_come_out_whole_as_soon_as_they_end() -> None:
    data = _array(ANSWER)
    first = orjson.dumps(THOUGHT, option=orjson.OPT_INDENT_2)
    end = data.index(first) + len(first)
    s = JsonArrayScanner(D)
    assert s.feed(data[: end - 1]) == b"["  # the first element without its closing brace: held
    assert s.feed(data[end - 1 : end]) == data[1:end]
    assert s.feed(b"\r\n,") == b"\r\n,"  # between elements nothing waits
    assert s.cut_tail() == CUT_ELEMENT + b"]"  # the comma went out already


def test_the_tail_before_anything_and_right_after_the_opening_bracket() -> None:
    s = JsonArrayScanner(D)
    assert orjson.loads(s.cut_tail()) == [orjson.loads(CUT_ELEMENT)]
    assert s.feed(b"[") == b"["
    assert orjson.loads(b"[" + s.cut_tail()) == [orjson.loads(CUT_ELEMENT)]


def test_an_element_past_the_hold_limit_goes_out_and_a_cut_inside_its_text_still_parses() -> None:
    big = {"candidates": [_text("x" * 5000 + ' "quoted" [and] {braced} \\')], "usageMetadata": _usage(5, 900)}
    data = _array([THOUGHT, big, LAST])
    start = data.index(b'"x')
    lone_backslash = data.index(b'\\\\"') + 1  # the text's last character is a backslash: cut between its two bytes
    for n in (start + 2000, start + 4000, data.index(b"[and]") + 2, data.index(b"braced") + 1, lone_backslash):
        s = JsonArrayScanner(D, hold_limit=1024)
        out = b"".join(s.feed(data[i : min(i + 512, n)]) for i in range(0, n, 512))
        assert out == data[:n]  # past the limit nothing is held
        doc = orjson.loads(out + s.cut_tail())
        assert doc[0] == THOUGHT and doc[-1] == orjson.loads(CUT_ELEMENT)
        assert doc[1]["candidates"][0]["content"]["parts"][0]["text"].startswith("xxx")


def test_a_big_element_within_the_hold_limit_is_held_whole() -> None:
    big = {"candidates": [_text("y" * 100_000)], "usageMetadata": _usage(5, 900)}
    data = _array([big, LAST])
    s = JsonArrayScanner(D)
    outs = [s.feed(data[i : i + 4096]) for i in range(0, len(data), 4096)]
    assert b"".join(outs) == data and s.usage == FINAL
    assert sum(1 for o in outs if o) <= 3  # "[", the big element when it ended, the rest


# -- classifying the first element -------------------------------------------------------------

def test_first_verdict_of_a_candidate_is_ok_and_of_an_error_element_the_dialects_verdict() -> None:
    assert first_verdict(D, orjson.dumps(THOUGHT)).outcome is Outcome.OK
    assert first_verdict(D, orjson.dumps(OVERLOADED)).outcome is Outcome.UPSTREAM_FAULT
    assert first_verdict(D, orjson.dumps(INTERNAL)).outcome is Outcome.UPSTREAM_FAULT
    per_minute = {"error": {"code": 429, "message": "Resource has been exhausted.", "status": "RESOURCE_EXHAUSTED",
                            "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                                {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}]}}
    v = first_verdict(D, orjson.dumps(per_minute, option=orjson.OPT_INDENT_2))
    assert v.outcome is Outcome.RATE_LIMITED and v.retry_after == 26.0
    bad_key = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                         "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                                    "reason": "API_KEY_INVALID"}]}}
    assert first_verdict(D, orjson.dumps(bad_key)).outcome is Outcome.INVALID_KEY


def test_an_error_element_after_candidates_is_relayed_and_the_array_still_ends() -> None:
    data = _array([THOUGHT, TRICKY, INTERNAL])
    s, out = _relay(data, list(range(7, len(data), 7)))
    assert out == data and s.ended() and s.usage == Usage(990, 87)
    assert first_verdict(D, s.first or b"").outcome is Outcome.OK


# -- which requests ask for the array ------------------------------------------------------------

@pytest.mark.parametrize(("path", "query", "array"), [
    ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "", True),
    ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "key=AIza", True),
    ("/v1/models/gemini-2.5-flash:streamGenerateContent", "alt=json", True),
    ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "%24alt=json%3Benum-encoding%3Dint", True),
    ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse", False),
    ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "key=AIza&alt=sse", False),
    ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=proto", False),
    ("/v1beta/models/gemini-2.5-flash:generateContent", "", False),
    ("/v1beta/openai/chat/completions", "", False),
])
def test_the_dialect_tells_which_requests_ask_for_the_array(path: str, query: str, array: bool) -> None:
    assert D.json_array_stream(path, query) is array
