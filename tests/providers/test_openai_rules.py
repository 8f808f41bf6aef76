"""The OpenAI classification table (``providers/openai_rules.py``): every row pinned by a real
upstream body."""

from __future__ import annotations

import pytest
from fixtures.budget_errors import BUDGET_FIXTURES
from fixtures.google_errors import GOOGLE_FIXTURES
from fixtures.openai_errors import FIXTURES as OPENAI_FIXTURES
from fixtures.openai_errors import Fixture
from fixtures.provider_errors import PROVIDER_FIXTURES

from keyrelay.core.model import Outcome, Verdict
from keyrelay.providers import get_dialect
from keyrelay.providers.openai import OpenAIDialect
from keyrelay.providers.openai_rules import RULES, rule_for

NOW = 1_750_000_000.0
FIXTURES = OPENAI_FIXTURES + GOOGLE_FIXTURES + BUDGET_FIXTURES + PROVIDER_FIXTURES
dialect = OpenAIDialect()


def _classify(fx: Fixture) -> Verdict:
    d = get_dialect(fx.dialect)
    if not fx.stream:
        return d.classify(fx.status, fx.headers, fx.body, NOW)
    verdicts = [v for v in map(d.classify_event, fx.events()) if v is not None]
    assert verdicts, f"{fx.name}: no event was classified as an error"
    return verdicts[0]


def _rule_index(fx: Fixture) -> int | None:
    table = getattr(get_dialect(fx.dialect), "rules", None) or RULES  # OpenAI-compatible dialects
    if fx.stream:
        rules = [r for r in (rule_for(200, d, event=True, rules=table) for d in fx.events()) if r is not None]
        rule = rules[0] if rules else None
    else:
        rule = rule_for(fx.status, fx.body, rules=table)
    return next((i for i, r in enumerate(RULES) if r is rule), None)


@pytest.mark.parametrize("fx", FIXTURES, ids=[f.name for f in FIXTURES])
def test_fixture_is_classified_as_expected(fx: Fixture) -> None:
    verdict = _classify(fx)
    assert verdict.outcome is fx.expected_outcome, (fx.source, verdict)
    if fx.expected_retry_after is None:
        assert verdict.retry_after is None
    else:
        assert verdict.retry_after == pytest.approx(fx.expected_retry_after)
    if fx.expected_outcome is not Outcome.OK:
        assert verdict.status == fx.status
        assert verdict.reason, "an error verdict names the rule that decided it"
    if fx.reason:
        assert verdict.reason == fx.reason


def test_fixture_names_are_unique_and_sourced() -> None:
    names = [f.name for f in FIXTURES]
    assert len(names) == len(set(names))
    assert all(f.source.startswith("[") for f in FIXTURES)


def test_every_rule_is_pinned_by_a_fixture() -> None:
    hit = {_rule_index(f) for f in FIXTURES} - {None}
    missing = [(i, RULES[i].outcome, RULES[i].reason) for i in range(len(RULES)) if i not in hit]
    assert not missing, f"rules without a fixture: {missing}"


def rule_for_preset(fx: Fixture) -> object:
    """The preset's own row that decides a fixture (``None`` if none of them does)."""
    own = getattr(get_dialect(fx.dialect), "preset", None)
    if own is None or fx.stream:
        return None
    return rule_for(fx.status, fx.body, rules=own.rules)


def test_error_fixtures_are_decided_by_a_rule_not_the_fallback() -> None:
    undecided = [
        f.name
        for f in FIXTURES
        if f.expected_outcome is not Outcome.OK and _rule_index(f) is None and rule_for_preset(f) is None
    ]
    assert not undecided


def test_rule_for_a_success_is_none() -> None:
    assert rule_for(200, b'{"id":"chatcmpl-1","choices":[]}') is None
    assert rule_for(200, b'data: {"choices":[]}', event=True) is None
