"""Copy a whole store into another: ``keyrelay migrate --from URL --to URL``.

Keys keep everything (state, reason, since, until, version, weight, label, added_at, counters,
balance); events keep their order (the destination numbers them anew); tokens keep their hash,
pools and revocation. The destination must not hold any of the keys or tokens already
(:meth:`Store.import_records` refuses, naming them). Afterwards the counts are read back from
the destination and compared: keys per pool, events, tokens.

Stop the gateways first: a key that changes in the source while it is being copied may be
copied as it was before the change. The source is only read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from keyrelay.core.model import KeyRecord
from keyrelay.exceptions import MigrationMismatch
from keyrelay.stores.base import Store

__all__ = ["MigrateReport", "MigrationMismatch", "migrate"]


@dataclass(frozen=True, slots=True)
class MigrateReport:
    """What was copied: keys per pool, events and tokens."""

    keys: dict[str, int] = field(default_factory=dict)
    events: int = 0
    tokens: int = 0

    @property
    def total_keys(self) -> int:
        return sum(self.keys.values())


async def _counts(store: Store) -> tuple[dict[str, KeyRecord], int, int]:
    keys = {r.id: r for r in await store.load()}
    return keys, len(await store.events(limit=0)), len(await store.list_tokens())


async def migrate(src: Store, dst: Store) -> MigrateReport:
    """Copy every key, event and token of ``src`` (open) into ``dst`` (open) and verify the
    counts; raises :class:`MigrationMismatch` when they differ, ``ValueError`` (nothing copied)
    when ``dst`` already holds some of the keys or tokens."""
    records = await src.load()
    events = await src.events(limit=0)
    tokens = await src.list_tokens()
    held, events_before, tokens_before = await _counts(dst)
    keys_before = Counter(r.pool for r in held.values())

    await dst.import_records(records, events, tokens)

    report = MigrateReport(dict(Counter(r.pool for r in records)), len(events), len(tokens))
    stored, events_after, tokens_after = await _counts(dst)
    keys_after = Counter(r.pool for r in stored.values())
    expected_events = events_before + report.events
    cap = getattr(dst, "max_events", None)  # a store that keeps only the last N events
    if isinstance(cap, int):
        expected_events = min(expected_events, cap)
    problems = [
        f"pool {pool!r}: {keys_after[pool]} keys, expected {keys_before[pool] + n}"
        for pool, n in sorted(report.keys.items())
        if keys_after[pool] != keys_before[pool] + n
    ]
    if events_after != expected_events:
        problems.append(f"{events_after} events, expected {expected_events}")
    if tokens_after != tokens_before + report.tokens:
        problems.append(f"{tokens_after} tokens, expected {tokens_before + report.tokens}")
    differ = [r.id for r in records if stored.get(r.id) != r]
    if differ:
        problems.append(f"{len(differ)} keys differ from the source (e.g. {', '.join(differ[:3])})")
    if problems:
        raise MigrationMismatch("the destination does not match what was copied: " + "; ".join(problems))
    return report
