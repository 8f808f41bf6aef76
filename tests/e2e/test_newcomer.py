"""A new user's first session, scripted: the example config copied to ./keyrelay.toml as it says,
the installed `keyrelay` run from that directory (no --config anywhere), every mistake the issue
lists answered with one line and exit code 2, and `serve` on an empty pool saying what to do."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from cli import KEYRELAY

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-proj-newcomer-" + "n" * 30 + "N001"


class Newcomer:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
        self.env["XDG_CONFIG_HOME"] = str(home / ".config")  # no config of this machine's user
        self.env["PYTHONUNBUFFERED"] = "1"

    def run(self, *args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KEYRELAY, *args], cwd=cwd or self.home, env=self.env, input=stdin, capture_output=True, text=True,
            timeout=60, check=False,
        )

    def refused(self, *args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
        """The one line a mistake gets (and its exit code 2)."""
        r = self.run(*args, stdin=stdin, cwd=cwd)
        lines = r.stderr.splitlines()
        assert (r.returncode, len(lines)) == (2, 1), (args, r.returncode, r.stderr)
        assert lines[0].startswith("keyrelay: ") and "Traceback" not in r.stderr
        return lines[0]


def _post(url: str, token: str) -> tuple[int, dict[str, str], dict[str, object]]:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(url, body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_a_newcomer_gets_one_line_for_every_mistake_and_serve_says_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "project"
    home.mkdir()
    port = free_port()
    example = (ROOT / "keyrelay.example.toml").read_text(encoding="utf-8")
    assert example.startswith("# keyrelay configuration — copy to keyrelay.toml and edit.")
    (home / "keyrelay.toml").write_text(example.replace("port = 8787", f"port = {port}"), encoding="utf-8")
    user = Newcomer(home)
    db = home / "keyrelay.db"

    # before any key: commands that read say there is no store, and create none
    for args in (("keys", "list"), ("keys", "show", "k0123456789a"), ("events",), ("tokens", "list"),
                 ("check", "--dry-run")):
        assert user.refused(*args) == (
            f"keyrelay: no store at {db} (add keys with 'keyrelay keys add', or pass --config)"
        )
    assert not db.exists()
    nosuch = home / "nosuch.db"
    assert "no store at" in user.refused("migrate", "--from", f"sqlite:///{nosuch}", "--to", f"sqlite:///{home}/b.db",
                                         "--yes")
    assert not nosuch.exists() and not (home / "b.db").exists()

    # serve on the empty pool: which config, which store, and the commands that fix the pool
    log = home / "serve.log"
    with open(log, "wb") as out:
        gateway = subprocess.Popen([*KEYRELAY, "serve"], cwd=home, env=user.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        text = log.read_text()
        assert "config keyrelay.toml; store sqlite:///" + str(db) in text
        assert "'keyrelay keys add --pool openai KEY'" in text
        assert "'keyrelay tokens create NAME --pool openai'" in text

        # a second gateway on the same port: one line, exit 2
        assert user.refused("serve") == (
            f"keyrelay: cannot serve on 127.0.0.1:{port}: the address is in use (stop the other server, or pick "
            "another --port)"
        )
        created = user.run("tokens", "create", "me", "--pool", "openai")
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip().splitlines()[-1]
        status, headers, body = _post(f"http://127.0.0.1:{port}/v1/chat/completions", token)
        assert status == 503 and headers["x-should-retry"] == "false"
        err = body["error"]
        assert isinstance(err, dict) and "keyrelay keys add --pool openai" in str(err["message"])
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(20)
    assert gateway.returncode == 0, log.read_text()
    assert "Unclosed" not in log.read_text() and "Traceback" not in log.read_text()

    # pasted keys that are not one key
    for value, why in ((f'"{KEY}"', "quotes"), (f"OPENAI_API_KEY={KEY}", "NAME=value"), (f"{KEY},{KEY}x", "comma"),
                       ("ab", "too short")):
        assert why in user.refused("keys", "add", "--pool", "openai", value)
    env_file = home / ".env"
    env_file.write_text(f"OPENAI_API_KEY={KEY}\n", encoding="utf-8")
    imported = user.run("keys", "import", "--pool", "openai", str(env_file))
    assert imported.returncode == 0 and "took the value of OPENAI_API_KEY=" in imported.stdout
    assert KEY not in imported.stdout + imported.stderr

    # the rest of the usual mistakes
    assert "no pool named 'groq'" in user.refused("keys", "add", "--pool", "groq", KEY + "2")
    assert "config file not found" in user.refused("keys", "list", "--config", "nope.toml")
    bad = home / "bad.toml"
    bad.write_text('[[pools]]\nname = "x"\nstrategy = "fastest"\n', encoding="utf-8")
    assert re.search(r"pools\[0\]\.strategy: unknown strategy", user.refused("keys", "list", "--config", str(bad)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert "no store at" in user.refused("keys", "list", cwd=elsewhere)  # no keyrelay.toml there: defaults
    assert not list(elsewhere.iterdir())

    # and from the project directory, ./keyrelay.toml finds the store again
    listed = user.run("keys", "list", "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1
