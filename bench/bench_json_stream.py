"""What reading Gemini's streamed JSON array as it arrives costs per chunk
(``providers/json_stream.py: JsonArrayScanner.feed``), next to what the SSE relay pays for the same
answer as ``alt=sse`` events (``providers/sse.py: UsageScanner``, ``wants`` + ``feed``: the baseline)
and to today's way for the array (join the whole body, decode it, take the last usage).

The answer: ``--elements`` GenerateContentResponse elements pretty-printed as Google sends them,
each with ``usageMetadata``, ``--text`` characters of text each (quotes, brackets and escapes in
it). Chunks: one element per chunk (Google's writes), and the same bytes cut every 700 bytes (a
proxy or TCP in between). Best of ``--repeat`` runs; CPU only, one core, no I/O.

    python bench/bench_json_stream.py [--elements 200] [--text 300] [--repeat 7]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from keyrelay.providers.gemini import GeminiDialect
from keyrelay.providers.json_stream import JsonArrayScanner
from keyrelay.providers.sse import UsageScanner

D = GeminiDialect()


def elements(n: int, text: int) -> list[dict[str, object]]:
    words = 'He said "]}" then {[ and C:\\dir\\ — café '
    body = (words * (text // len(words) + 1))[:text]
    out: list[dict[str, object]] = []
    for i in range(n):
        cand: dict[str, object] = {"content": {"parts": [{"text": body}], "role": "model"}, "index": 0}
        if i == n - 1:
            cand["finishReason"] = "STOP"
        usage = {"promptTokenCount": 990, "candidatesTokenCount": 10 * (i + 1), "totalTokenCount": 1057 + 10 * i,
                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 990}], "thoughtsTokenCount": 67}
        out.append({"candidates": [cand], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash", "responseId": "YhP"})
    return out


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=200)
    ap.add_argument("--text", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    docs = elements(a.elements, a.text)
    pretty = [orjson.dumps(d, option=orjson.OPT_INDENT_2) for d in docs]
    array_chunks = [(b"[" if i == 0 else b"\r\n,") + p for i, p in enumerate(pretty)] + [b"\r\n]"]
    sse_chunks = [b"data: " + orjson.dumps(d) + b"\r\n\r\n" for d in docs]
    whole = b"".join(array_chunks)
    cut_chunks = [whole[i : i + 700] for i in range(0, len(whole), 700)]

    def scan(chunks: list[bytes]) -> Callable[[], object]:
        def run() -> object:
            s = JsonArrayScanner(D)
            for c in chunks:
                s.feed(c)
            return s.usage

        return run

    def sse() -> object:
        u = UsageScanner(D)
        for c in sse_chunks:
            if u.wants(c):
                u.feed(c)
        return u.usage

    def buffered() -> object:
        doc = orjson.loads(b"".join(array_chunks))
        return D.usage(doc[-1])

    assert scan(array_chunks)() == scan(cut_chunks)() == sse() == buffered()
    base = best(a.repeat, sse)
    print(f"{a.elements} elements of {len(pretty[0])} bytes (pretty-printed), {len(whole)} bytes in all")
    print(f"{'':44} {'µs/answer':>10} {'µs/chunk':>9} {'ratio':>6}")
    rows = [("sse.UsageScanner, alt=sse events (baseline)", base, len(sse_chunks)),
            ("JsonArrayScanner, one element per chunk", best(a.repeat, scan(array_chunks)), len(array_chunks)),
            ("JsonArrayScanner, 700-byte chunks", best(a.repeat, scan(cut_chunks)), len(cut_chunks)),
            ("buffer the whole array, decode (today)", best(a.repeat, buffered), len(array_chunks))]
    for name, t, n in rows:
        print(f"{name:44} {t * 1e6:10.1f} {t * 1e6 / n:9.2f} {t / base:6.2f}")


if __name__ == "__main__":
    main()
