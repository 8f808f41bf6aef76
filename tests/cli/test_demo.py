"""`keyrelay demo` runs end to end: every client request succeeds while bad keys retire."""

from __future__ import annotations

import subprocess
import sys


def test_demo_shows_bad_keys_retiring_while_every_request_succeeds():
    out = subprocess.run(
        [sys.executable, "-m", "keyrelay.cli.main", "demo", "--seconds", "3"],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "invalid api key" in text and "account deactivated" in text and "quota exhausted" in text
    last = text.strip().splitlines()[-1]
    assert last.endswith("client requests succeeded."), last
    assert "sk-demo-healthy-aaaa" not in text  # keys shown masked only
