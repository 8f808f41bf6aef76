"""The fake upstream's Gemini ``:streamGenerateContent`` without ``alt=sse``: a JSON array written
element by element over chunked transfer, which :class:`JsonArrayScanner` reads as it arrives;
its error-first and cut-mid-element behaviours look to a reader like Google's."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from keyrelay.core.model import Outcome
from keyrelay.providers.gemini import GeminiDialect
from keyrelay.providers.json_stream import CUT_ELEMENT, JsonArrayScanner, first_verdict
from keyrelay.testing.fake_upstream import Behavior, FakeUpstream
from keyrelay.testing.openai_bodies import COMPLETION_TOKENS

KEY = "AIzaSy-fake-gemini-" + "s" * 20
PATH = "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent"
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


async def _read(behavior: Behavior, chunks: int = 6) -> tuple[JsonArrayScanner, list[bytes], bool, bytes]:
    """(scanner, what it handed back per read, whether the body broke off, the raw body)."""
    scanner, outs, raw, broke = JsonArrayScanner(GeminiDialect()), [], b"", False
    fake = FakeUpstream({KEY: behavior}, stream_chunks=chunks, chunk_delay=0.02)
    async with fake, aiohttp.ClientSession() as s, s.post(fake.root + PATH, json=BODY, headers={"x-goog-api-key": KEY}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        try:
            async for piece in r.content.iter_any():
                raw += piece
                outs.append(scanner.feed(piece))
        except aiohttp.ClientPayloadError:
            broke = True
    return scanner, outs, broke, raw


async def test_the_array_arrives_element_by_element_and_reads_whole() -> None:
    scanner, outs, broke, raw = await _read(Behavior.OK)
    doc = orjson.loads(raw)
    assert not broke and len(doc) == 6 and b"".join(outs) == raw
    assert sum(1 for o in outs if o) >= 6  # elements came one by one, not in one piece at the end
    assert first_verdict(GeminiDialect(), scanner.first or b"").outcome is Outcome.OK
    assert scanner.ended() and doc[-1]["candidates"][0]["finishReason"] == "STOP"
    assert scanner.usage is not None and scanner.usage.completion_tokens == COMPLETION_TOKENS
    assert scanner.usage.prompt_tokens == 10


async def test_stream_error_answers_an_array_whose_first_element_is_a_503() -> None:
    scanner, _, broke, raw = await _read(Behavior.STREAM_ERROR)
    assert not broke and scanner.ended()
    assert orjson.loads(raw)[0]["error"]["status"] == "UNAVAILABLE"
    verdict = first_verdict(GeminiDialect(), scanner.first or b"")
    assert verdict.outcome is Outcome.UPSTREAM_FAULT and verdict.reason == "upstream at capacity"  # the 503 row


@pytest.mark.parametrize("chunks", [4, 6])
async def test_a_cut_mid_element_leaves_whole_elements_and_the_tail_closes_the_array(chunks: int) -> None:
    scanner, outs, broke, raw = await _read(Behavior.STREAM_CUT, chunks)
    assert broke and not scanner.ended()
    assert scanner.held > 0  # half of the third element arrived and was held back
    doc = orjson.loads(b"".join(outs) + scanner.cut_tail())
    assert len(doc) == 3 and doc[-1] == orjson.loads(CUT_ELEMENT)
    assert all("candidates" in e for e in doc[:2])
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)  # what a client would have had without the scanner
