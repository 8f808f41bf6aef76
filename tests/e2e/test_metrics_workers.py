"""`keyrelay serve --workers 2`: one scrape of /metrics sees every worker's requests up to the
moment it asked, whichever worker answers it; a worker that dies keeps its counts; the run's
metrics directory goes away. And each alert is sent once, by one worker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

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
        def served_by() -> set[str]:  # access lines reach the file within the handler's 0.2 s flush
            return set(re.findall(r"logger=keyrelay\.access .*status=200 .* pid=(\d+)", log.read_text()))

        wait_for(lambda: len(served_by()) == 2, 10, "the kernel gave every connection to one worker")

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


class _Hook(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        _Hook.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_each_alert_is_sent_once_by_one_of_two_workers(tmp_path: Path, upstream_factory: Any) -> None:
    bad = [f"sk-proj-alertbad{i}-{'b' * 30}{i:04d}" for i in range(2)]
    up = upstream_factory({**{k: Behavior.OK for k in GOOD}, **{k: Behavior.INVALID for k in bad}})
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.bodies = []
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path, up.url, port, strategy="round_robin")
    config.write_text(config.read_text().replace("[store]", "workers = 2\n[store]") + (
        f'[pools.checker]\ncorrelated_share = 1.0\n'
        f'[[alerts]]\nurl = "http://127.0.0.1:{hook.server_address[1]}/hook"\n'
        'on = ["key_retired", "pool_low"]\nthreshold = 5\n'
    ))
    assert cli(config, "keys", "add", "--pool", "openai", *GOOD, *bad).returncode == 0
    token = cli(config, "tokens", "create", "a", "--pool", "openai").stdout.strip().splitlines()[-1]
    log = tmp_path / "gateway.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keyrelay.cli.main", "serve", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for(lambda: "2 workers serving" in log.read_text() or proc.poll() is not None, 30, "no workers")
        assert proc.poll() is None, log.read_text()
        with ThreadPoolExecutor(8) as pool:  # both workers meet the bad keys (round robin, new connections)
            statuses = list(pool.map(lambda _: post(url, token), range(60)))
        assert statuses == [200] * 60
        wait_for(lambda: len(_Hook.bodies) >= 3, 15, f"alerts missing: {_Hook.bodies}")
        time.sleep(2.0)  # a duplicate from the other worker would have come by now
        retired = [b for b in _Hook.bodies if b["event"] == "key_retired"]
        low = [b for b in _Hook.bodies if b["event"] == "pool_low"]
        assert sorted(b["masked"][-4:] for b in retired) == sorted(k[-4:] for k in bad), _Hook.bodies
        assert len(low) == 1 and low[0]["eligible"] == 4 and low[0]["threshold"] == 5, _Hook.bodies
        raw = json.dumps(_Hook.bodies)
        assert not any(k in raw for k in (*GOOD, *bad, token))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        hook.shutdown()
        hook.server_close()
