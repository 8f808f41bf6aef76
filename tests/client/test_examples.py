"""The examples run as written, against the fake upstream, with some bad keys in the pool."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from keyrelay.core.masking import mask
from keyrelay.testing.fake_upstream import Behavior

from .conftest import GOOD, INVALID, QUOTA, ThreadedUpstream

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("script", ["openai_sync.py", "openai_async_stream.py"])
def test_the_example_runs_and_retires_the_bad_keys(script: str, upstream: Callable[..., ThreadedUpstream]) -> None:
    keys = {GOOD[0]: Behavior.OK, GOOD[1]: Behavior.OK, INVALID: Behavior.INVALID, QUOTA: Behavior.QUOTA}
    up = upstream(keys)
    env = {**os.environ, "OPENAI_BASE_URL": up.url, "KEYRELAY_KEYS": ",".join(keys)}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Say hello. -> Hello" in proc.stdout
    for secret in keys:
        assert secret not in proc.stdout + proc.stderr
    for secret, state in ((INVALID, "invalid"), (QUOTA, "exhausted")):
        if up.count(secret):  # a bad key the example happened to meet is retired
            assert re.search(rf"{re.escape(mask(secret))}\s+{state}\b", proc.stdout), proc.stdout
    # the async example asks 4 questions at once: each may meet a bad key before it is known bad
    assert up.count(INVALID) <= 4 and up.count(QUOTA) <= 4


def test_an_example_without_keys_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KEYRELAY_KEYS"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "openai_sync.py")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2 and "KEYRELAY_KEYS" in proc.stderr
