"""What ``bench_soak.py`` judges: a key's fragments in text, a 200's body, a stream's end, the
gateway's log, the RSS series. Pure functions (``tests/e2e/test_soak_smoke.py`` checks them)."""

from __future__ import annotations

import re
from collections import Counter

import orjson

GRAM = 12  # key fragments this long are searched for in answers and logs
PREFIX = len("sk-soak-0001-")  # what every seeded key starts with (masks show it): not a fragment
_RUN = re.compile(rb"[A-Za-z0-9]{%d,}" % GRAM)


class Leaks:
    """Finds fragments (``GRAM`` characters of a key's random part) of the seeded keys."""

    def __init__(self, keys: list[str]) -> None:
        self.owner = {k[i:i + GRAM].encode(): k for k in keys for i in range(PREFIX, len(k) - GRAM + 1)}

    def find(self, data: bytes) -> set[str]:
        found = set()
        for m in _RUN.finditer(data):
            run = m.group()
            for i in range(len(run) - GRAM + 1):
                k = self.owner.get(run[i:i + GRAM])
                if k is not None:
                    found.add(k)
        return found


def answer_problem(kind: str, data: bytes) -> str | None:
    """What is wrong with a 200's JSON body (``None``: it is the answer)."""
    try:
        doc = orjson.loads(data)
        if doc["data"] if kind == "models" else doc["choices"]:
            return None
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return "a 200 whose body is not the answer"


def stream_verdict(data: bytes, cut_by_upstream: bool) -> tuple[str, str | None]:
    """(outcome, what is wrong or ``None``) of a streamed 200; ``cut_by_upstream``: its key cuts streams."""
    events = [line[5:].strip() for line in data.split(b"\n") if line.startswith(b"data:")]
    errors = [e for e in events if e.startswith(b'{"error"')]
    if events and events[-1] == b"[DONE]" and not errors:
        try:
            if all(orjson.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1]):
                return "ok", None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
        return "bad_event", "a stream event that is not a chunk"
    if cut_by_upstream:
        whole = bool(errors) and events[-1] == errors[-1]  # the gateway's last event says why
        return ("upstream_cut" if whole else "upstream_cut_without_error_event"), None
    return "truncated", "a stream ended without its last event"


def rss_summary(samples: list[tuple[float, float]], warmup: float, seconds: float) -> dict[str, float]:
    """``samples``: (seconds into the run, MB). The first sample, the first after ``warmup``, the
    peak, the last, and the least-squares slope (MB/min) of the second half of the run."""
    after = [(t, m) for t, m in samples if t >= warmup] or samples[-1:]
    half = [(t, m) for t, m in samples if t >= seconds / 2] or after
    n = len(half)
    mt, mm = sum(t for t, _ in half) / n, sum(m for _, m in half) / n
    var = sum((t - mt) ** 2 for t, _ in half)
    slope = sum((t - mt) * (m - mm) for t, m in half) / var * 60 if var else 0.0
    return {"first": samples[0][1], "start": after[0][1], "peak": max(m for _, m in samples),
            "end": samples[-1][1], "slope_mb_per_min": slope, "samples": len(samples)}


def gateway_log(text: str, leaks: Leaks) -> tuple[list[str], set[str], Counter[str], Counter[str]]:
    """(tracebacks and error lines, keys whose fragments appear, lines by level, warnings by logger
    and first words). The formatter writes a logged exception as ``exc=Name`` (no traceback): an
    error-level line is what a caught crash leaves; a raw ``Traceback`` one that was not caught."""
    lines = text.splitlines()
    errors = ["\n".join(lines[i:i + 12]) for i, line in enumerate(lines) if line.startswith("Traceback")]
    errors += [line for line in lines if " level=error " in line or " level=critical " in line]
    levels = Counter(m.group(1) for m in re.finditer(r" level=(\w+) ", text))
    warnings = Counter(" ".join(line.split(" level=warning ", 1)[1].split()[:4])
                       for line in lines if " level=warning " in line)
    return errors, leaks.find(text.encode()), levels, warnings
