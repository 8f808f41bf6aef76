"""Unauthenticated resource exhaustion, scaled down (bench/bench_exhaustion.py runs the full
size: 1,000 endless-header sockets and 2,000 idle half-requests): a real `keyrelay serve`
keeps its memory, keeps serving a normal client fast, and closes every attacker socket within
its header timeout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_exhaustion.py"


def test_attackers_are_closed_in_time_and_normal_clients_keep_being_served() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--huge", "100", "--idle", "200", "--header-timeout", "2", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["rss_mb_peak"] < 200
    assert r["rss_mb_peak"] - r["rss_mb_before"] < 50  # 300 sockets may not cost more than this
    assert r["normal_failures"] == 0 and r["normal_requests"] > 100
    assert r["p99_ms"] < 100
    assert r["attackers_closed"] == 300 and r["attackers_open_at_end"] == 0
    assert r["close_max_s"] <= 2.0
    assert r["huge_close_max_s"] <= 2.0
    assert r["tracebacks"] == 0
