"""Test helpers shipped with keyrelay: a fake OpenAI upstream for tests, demos and benchmarks."""

from __future__ import annotations

from keyrelay.testing.fake_upstream import Behavior, Call, FakeUpstream, KeySpec

__all__ = ["Behavior", "Call", "FakeUpstream", "KeySpec"]
