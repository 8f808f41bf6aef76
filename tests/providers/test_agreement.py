"""Every fixture file, run through the dialect of the provider that sent it: how many answers
keyrelay reads as the provider documents them. Reports the disagreements by name."""

from __future__ import annotations

from fixtures.anthropic_errors import ANTHROPIC_FIXTURES
from fixtures.budget_errors import BUDGET_FIXTURES
from fixtures.google_errors import GOOGLE_FIXTURES
from fixtures.openai_errors import FIXTURES as OPENAI_FIXTURES
from fixtures.openai_errors import Fixture
from fixtures.provider_errors import PROVIDER_FIXTURES

from keyrelay.providers import DIALECTS, get_dialect

FILES = {
    "openai_errors": OPENAI_FIXTURES,
    "google_errors": GOOGLE_FIXTURES,
    "budget_errors": BUDGET_FIXTURES,
    "anthropic_errors": ANTHROPIC_FIXTURES,
    "provider_errors": PROVIDER_FIXTURES,
}
#: the dialect of a file whose fixtures all come from one native API
NATIVE = {"anthropic_errors": "anthropic"}


def _agrees(fx: Fixture, native: str | None = None) -> bool:
    d = get_dialect(native or fx.dialect)
    if fx.stream:
        verdicts = [v for v in map(d.classify_event, fx.events()) if v is not None]
        if not verdicts:
            return False
        v = verdicts[0]
    else:
        v = d.classify(fx.status, fx.headers, fx.body, 1_750_000_000.0)
    return v.outcome is fx.expected_outcome and (not fx.reason or v.reason == fx.reason)


def test_every_fixture_file_agrees_with_the_providers_documented_meaning() -> None:
    report = []
    disagree = []
    for name, fixtures in FILES.items():
        bad = [f.name for f in fixtures if not _agrees(f, NATIVE.get(name))]
        report.append(f"{name}: {len(fixtures) - len(bad)}/{len(fixtures)}")
        disagree += bad
    total = sum(len(f) for f in FILES.values())
    assert not disagree, f"agreement {total - len(disagree)}/{total} ({'; '.join(report)}); wrong: {disagree}"


def test_fixtures_name_known_providers() -> None:
    assert {f.dialect for fs in FILES.values() for f in fs} <= set(DIALECTS)
