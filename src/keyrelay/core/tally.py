"""Counting outcomes: the tally a key pool appends one entry to per attempt, and its sums per
key and per pool, in :data:`~keyrelay.core.model.COUNTER_FIELDS` order (the rows a counter
flush writes: ``runtime/process.py``).

A tally entry is ``(key id, index of the outcome's counter, prompt tokens, completion tokens)``.

Pure.
"""

from __future__ import annotations

from collections import Counter

from keyrelay.core.model import COUNTER_FIELDS, Outcome

__all__ = ["OUTCOME_INDEX", "Entry", "merge_sums", "sum_tally"]

Entry = tuple[str, int, int, int]

_OUTCOME_COUNTER = {
    Outcome.OK: "successes",
    Outcome.RATE_LIMITED: "rate_limited",
    Outcome.QUOTA_EXHAUSTED: "quota_exhausted",
    Outcome.INVALID_KEY: "invalid_key",
    Outcome.UPSTREAM_FAULT: "upstream_fault",
    Outcome.NETWORK_ERROR: "network_error",
    Outcome.CLIENT_ERROR: "client_error",
}
_FIELD_INDEX = {f: i for i, f in enumerate(COUNTER_FIELDS)}
#: an outcome → the index of its counter
OUTCOME_INDEX = {o: _FIELD_INDEX[f] for o, f in _OUTCOME_COUNTER.items()}
_PROMPT, _COMPLETION = _FIELD_INDEX["prompt_tokens"], _FIELD_INDEX["completion_tokens"]
_WIDTH = len(COUNTER_FIELDS)


def sum_tally(tally: list[Entry], rows: dict[str, list[int]], total: list[int] | None = None) -> None:
    """Add ``tally`` to the per-key sums ``rows`` and to the pool's ``total``."""
    prompts = completions = 0
    for kid, index, prompt, completion in tally:
        row = rows.get(kid)
        if row is None:
            row = rows[kid] = [0] * _WIDTH
        row[0] += 1  # requests
        row[index] += 1
        row[_PROMPT] += prompt
        row[_COMPLETION] += completion
        prompts += prompt
        completions += completion
    if total is not None and tally:
        total[0] += len(tally)
        for index, n in Counter(t[1] for t in tally).items():
            total[index] += n
        total[_PROMPT] += prompts
        total[_COMPLETION] += completions


def merge_sums(into: dict[str, list[int]], sums: dict[str, list[int]]) -> None:
    """Add the per-key sums ``sums`` to ``into``."""
    for kid, row in sums.items():
        mine = into.get(kid)
        if mine is None:
            into[kid] = row
        else:
            for i, v in enumerate(row):
                mine[i] += v
