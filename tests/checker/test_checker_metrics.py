"""What the checker does shows in /metrics (sweeps, probe results, transitions) and in the
alert events (a retired key, masked), as the gateway runs it."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from checker.billing_upstream import BillingUpstream
from checker.helpers import Clock
from checker.test_billing_sweep import EXPIRED, SIX, SPENT, six_accounts
from checker.test_in_the_gateway import settings
from keyrelay.runtime.process import Runtime
from keyrelay.server.metrics import MetricsEndpoint
from keyrelay.stores.base import key_id_for
from keyrelay.stores.memory import MemoryStore


async def test_sweeps_probes_and_retirements_are_counted(upstream: BillingUpstream) -> None:
    six_accounts(upstream)
    store = MemoryStore()
    await store.add_keys("main", list(SIX), 0.0)
    s = settings(upstream.base_url)
    runtime = Runtime(s, store, clock=Clock())
    await runtime.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0.02)
            if runtime.default_pool.eligible_count() == 4:
                break
        await asyncio.sleep(0.2)  # the sweep that retired them has finished
        text = (await MetricsEndpoint(runtime, s.metrics).render()).decode()
    finally:
        await runtime.stop()
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def total(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in found.items() if n == name and all((k, labels[k]) in ls for k in labels))

    assert total("keyrelay_checker_sweeps_total", pool="main", result="done") >= 1
    assert total("keyrelay_checker_probes_total", pool="main", result="invalid") >= 1
    assert total("keyrelay_checker_probes_total", pool="main", result="exhausted") >= 1
    assert total("keyrelay_checker_probes_total", pool="main") >= len(SIX)
    assert total("keyrelay_key_transitions_total", pool="main", to="invalid") == 1
    assert total("keyrelay_key_transitions_total", pool="main", to="exhausted") == 1
    assert total("keyrelay_keys", pool="main", state="invalid") == 1
    assert runtime.telemetry is not None
    retired = {e.fields["key_id"]: e for e in runtime.telemetry.events if e.kind == "key_retired"}
    assert set(retired) == {key_id_for("main", EXPIRED), key_id_for("main", SPENT)}
    assert retired[key_id_for("main", SPENT)].fields["actor"] == "checker"
    for e in retired.values():
        assert EXPIRED not in e.text and SPENT not in e.text and str(e.fields["masked"]) in e.text
    for secret in SIX:
        assert secret not in text
