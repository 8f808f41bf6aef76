"""`keyrelay serve --workers 2`: one scrape of /metrics sees every worker's requests up to the
moment it asked, whichever worker answers it; a worker that dies keeps its counts; the run's
metrics directory goes away."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from keyrelay.testing.fake_upstream import Behavior

from .conftest import cli, free_port, write_config
from .test_workers import children_of, wait_for

GOOD = [f"sk-proj-metrics{i}-{'m' * 30}{i:04d}" for i in range(4)]
BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'


def post(url: str, token: str) -> int:
    req = urllib.request.Request(url + "/v1/chat/completions", data=BODY, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
    })
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # a new connection each time: both workers get some
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    found: dict[str, Any] = {"text": text, "requests": 0.0, "ok": 0.0, "attempts": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "keyrelay_requests_total":
                found["requests"] += s.value
                if s.labels["outcome"] == "ok" and s.labels["status"] == "200":
                    found["ok"] += s.value
            elif s.name == "keyrelay_upstream_attempts_total":
                found["attempts"] += s.value
            elif s.name == "keyrelay_metrics_workers":
                found["workers"] = s.value
            elif s.name == "keyrelay_request_duration_seconds_count":
                found["timed"] = s.value
    return found


def test_one_scrape_counts_the_requests_of_every_worker(tmp_path: Path, upstream_factory: Any) -> None:
    up = upstream_factory({k: Behavior.OK for k in GOOD})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path, up.url, port)
    assert cli(config, "keys", "add", "--pool", "openai", *GOOD).returncode == 0
    token = cli(config, "tokens", "create", "m", "--pool", "openai").stdout.strip().splitlines()[-1]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    log = tmp_path / "gateway.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(config), "--workers", "2"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)},
        )
    try:
        wait_for(lambda: "2 workers serving" in log.read_text() or proc.poll() is not None, 30, "no workers")
        assert proc.poll() is None, log.read_text()
        assert len(list(tmp.glob("keyrelay-metrics-*"))) == 1  # the run's directory

        sent = 240
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: post(url, token), range(sent)))
        assert statuses == [200] * sent
        pids = set(re.findall(r"logger=keyrelay\.access .*status=200 .* pid=(\d+)", log.read_text()))
        assert len(pids) == 2, "the kernel gave every connection to one worker; the test proves nothing"

        # at once, whichever worker answers: the scraping worker asks the other for its counts
        for _ in range(12):  # new connections: both workers answer some of these
            found = scrape(url)
            assert found["ok"] == sent and found["requests"] == sent and found["timed"] == sent
            assert found["workers"] == 2
        wait_for(lambda: scrape(url)["attempts"] == sent, 15, "attempts not summed over the workers")
        for secret in (*GOOD, token):
            assert secret not in found["text"]

        # a worker killed outright: its counts stay in the sums (counters never go back)
        kids = children_of(proc.pid)
        victim = min(kids)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(children_of(proc.pid) - {victim}) == 2, 15, "the dead worker was not replaced")
        wait_for(lambda: "workers serving" in log.read_text(), 5, "")
        for _ in range(6):
            try:
                found = scrape(url)
            except OSError:  # the replacement may be a moment from listening
                time.sleep(0.2)
                continue
            assert found["ok"] == sent

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert list(tmp.glob("keyrelay-metrics-*")) == []  # cleaned up at exit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
