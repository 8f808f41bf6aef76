"""``keyrelay keys …`` and ``keyrelay events`` through a SQLite store in ``tmp_path``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from keyrelay.core.masking import mask
from keyrelay.core.model import KeyRecord, KeyState, Transition
from keyrelay.stores.base import key_id_for
from keyrelay.stores.sqlite import SQLiteStore

from . import invoke, make_config, new_secret, with_db


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return make_config(tmp_path)


def listed(cfg: Path, *args: str) -> list[dict[str, Any]]:
    result = invoke(cfg, "keys", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    return data


def stored(tmp_path: Path, pool: str | None = None) -> list[KeyRecord]:
    async def load(store: SQLiteStore) -> list[KeyRecord]:
        return await store.load(pool)

    return with_db(tmp_path, load)


def assert_no_secret(text: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in text


# -- add -------------------------------------------------------------------------------------


def test_add_reports_added_and_duplicates_and_lists_masked(cfg: Path, tmp_path: Path) -> None:
    a, b = new_secret(), new_secret()
    result = invoke(cfg, "keys", "add", "--pool", "openai", a, b, a)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "added 2 keys to pool openai (1 duplicate skipped)"
    assert f"{key_id_for('openai', a)}  {mask(a)}" in result.stdout
    assert f"{key_id_for('openai', b)}  {mask(b)}" in result.stdout
    assert_no_secret(result.output, a, b)

    again = invoke(cfg, "keys", "add", "--pool", "openai", a)
    assert again.exit_code == 0
    assert again.stdout.splitlines()[0] == "added 0 keys to pool openai (1 duplicate skipped)"
    assert "already in the pool" in again.stdout
    assert sorted(r.secret for r in stored(tmp_path)) == sorted([a, b])


def test_add_reads_stdin_with_a_dash_and_applies_weight_and_label(cfg: Path, tmp_path: Path) -> None:
    a, b, c = new_secret(), new_secret(), new_secret()
    result = invoke(
        cfg, "keys", "add", "--pool", "groq", "--weight", "2.5", "--label", "team-a", c, "-",
        input=f"{a}\n# a comment\n\n  {b}  # trailing\n",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("added 3 keys to pool groq\n")
    keys = listed(cfg, "--pool", "groq")
    assert {k["masked"] for k in keys} == {mask(a), mask(b), mask(c)}
    assert all(k["weight"] == 2.5 and k["label"] == "team-a" for k in keys)
    assert {r.secret for r in stored(tmp_path, "groq")} == {a, b, c}


def test_an_invalid_key_fails_the_whole_add_naming_it_masked(cfg: Path, tmp_path: Path) -> None:
    good, bad = new_secret(), "sk-proj-has a-space-in-it-0123"
    result = invoke(cfg, "keys", "add", "--pool", "openai", good, bad)
    assert result.exit_code == 2
    assert result.stdout == ""
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("keyrelay: ") and mask(bad) in err and "whitespace" in err and "nothing added" in err
    assert_no_secret(result.output, good, bad)
    assert stored(tmp_path) == []


@pytest.mark.parametrize("weight", ["0", "-1", "nan", "inf", "heavy"])
def test_a_bad_weight_is_a_usage_error(cfg: Path, weight: str) -> None:
    result = invoke(cfg, "keys", "add", "--pool", "openai", "--weight", weight, new_secret())
    assert result.exit_code == 2
    assert "--weight" in result.stderr


def test_add_to_an_unknown_pool_names_it_and_the_known_pools(cfg: Path, tmp_path: Path) -> None:
    result = invoke(cfg, "keys", "add", "--pool", "anthropic", new_secret())
    assert result.exit_code == 2
    assert "'anthropic'" in result.stderr and "openai, groq" in result.stderr
    assert stored(tmp_path) == []


# -- import ----------------------------------------------------------------------------------


def test_import_skips_comments_blanks_and_reports_duplicates(cfg: Path, tmp_path: Path) -> None:
    old, a, b, c = (new_secret() for _ in range(4))
    assert invoke(cfg, "keys", "add", "--pool", "openai", old).exit_code == 0
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text(
        "# production keys\n"
        f"{a}\n"
        "\n"
        f"   {b}   # the backup one\n"
        "    \n"
        f"{old}\n"  # already in the store
        f"{a}\t# again\n"  # repeated in the file
        f"{c}\n",
        encoding="utf-8",
    )
    result = invoke(cfg, "keys", "import", "--pool", "openai", str(keyfile))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0] == (
        f"imported 3 keys into pool openai from {keyfile} "
        "(2 duplicates skipped: 1 repeated in the file, 1 already in the pool)"
    )
    assert f"line 6: {mask(old)} already in the pool" in out
    assert f"line 7: {mask(a)} repeats line 2" in out
    assert_no_secret(result.output, old, a, b, c)
    assert sorted(r.secret for r in stored(tmp_path)) == sorted([old, a, b, c])


def test_import_with_an_invalid_line_names_its_number_and_adds_nothing(cfg: Path, tmp_path: Path) -> None:
    a, b = new_secret(), new_secret()
    bad = "sk-proj-two keys-on-one-line-0123456789"
    keyfile = tmp_path / "keys.txt"
    keyfile.write_bytes(f"# header\n{a}\n\n{bad}\n{b}\n".encode() + b"sk-caf\xc3\xa9-1234567890\n")
    result = invoke(cfg, "keys", "import", "--pool", "openai", str(keyfile))
    assert result.exit_code == 2
    assert "2 invalid lines" in result.stderr and "nothing added" in result.stderr
    assert "line 4:" in result.stderr and "whitespace" in result.stderr
    assert "line 6:" in result.stderr and "non-ASCII" in result.stderr
    assert_no_secret(result.output, a, b, bad, "sk-caf")
    assert stored(tmp_path) == []


def test_import_of_an_unreadable_file_is_one_line(cfg: Path, tmp_path: Path) -> None:
    result = invoke(cfg, "keys", "import", "--pool", "openai", str(tmp_path / "missing.txt"))
    assert result.exit_code == 2
    assert result.stderr.startswith("keyrelay: cannot read ")
    assert len(result.stderr.splitlines()) == 1


def test_import_of_100k_keys_is_fast_and_shows_a_progress_bar(cfg: Path, tmp_path: Path) -> None:
    n = 100_000
    keyfile = tmp_path / "big.txt"
    keyfile.write_text("".join(f"sk-test-{i:08d}-{'x' * 24}\n" for i in range(n)), encoding="utf-8")
    started = time.perf_counter()
    result = invoke(cfg, "keys", "import", "--pool", "openai", str(keyfile))
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"imported {n} keys into pool openai")
    assert f"{n}/{n}" in result.stderr  # the bar (more than 1000 keys), on stderr
    assert elapsed < 30, f"import of {n} keys took {elapsed:.1f}s"
    assert len(stored(tmp_path)) == n


def test_a_small_import_shows_no_bar_when_stderr_is_not_a_terminal(cfg: Path, tmp_path: Path) -> None:
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text(new_secret() + "\n", encoding="utf-8")
    assert "created the key file" in invoke(cfg, "keys", "add", "--pool", "groq", new_secret()).stderr  # once
    result = invoke(cfg, "keys", "import", "--pool", "openai", str(keyfile))
    assert result.exit_code == 0
    assert result.stderr == ""


# -- list / show -----------------------------------------------------------------------------


def test_list_json_has_the_documented_fields_and_never_a_secret(cfg: Path, tmp_path: Path) -> None:
    a, b = new_secret(), new_secret("gsk_")
    assert invoke(cfg, "keys", "add", "--pool", "openai", "--label", "main", a).exit_code == 0
    assert invoke(cfg, "keys", "add", "--pool", "groq", b).exit_code == 0
    result = invoke(cfg, "keys", "list", "--json")
    assert result.exit_code == 0
    assert_no_secret(result.output, a, b)
    keys = json.loads(result.stdout)
    assert [(k["pool"], k["masked"]) for k in keys] == [("openai", mask(a)), ("groq", mask(b))]
    first = keys[0]
    for field in ("id", "pool", "masked", "state", "reason", "since", "until", "version", "weight", "label",
                  "added_at", "counters", "balance", "currency"):
        assert field in first
    assert first["id"] == key_id_for("openai", a)
    assert first["state"] == "active" and first["label"] == "main" and first["balance"] is None
    assert first["counters"]["requests"] == 0
    assert "secret" not in first
    assert [k["masked"] for k in listed(cfg, "--pool", "groq")] == [mask(b)]

    table = invoke(cfg, "keys", "list")
    assert table.exit_code == 0
    assert mask(a) in table.stdout and mask(b) in table.stdout and "2 keys: 2 active" in table.stdout
    assert_no_secret(table.output, a, b)


def test_a_key_with_its_own_base_url_is_stored_listed_and_shown(cfg: Path, tmp_path: Path) -> None:
    own, plain = new_secret(""), new_secret("")
    url = "https://my-resource.openai.azure.com"
    added = invoke(cfg, "keys", "add", "--pool", "openai", "--base-url", url + "/", own)
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith(f"added 1 key to pool openai (sent to {url})\n")
    assert invoke(cfg, "keys", "add", "--pool", "openai", plain).exit_code == 0

    assert {r.secret: r.base_url for r in stored(tmp_path)} == {own: url, plain: None}  # trailing / dropped
    assert {k["masked"]: k["base_url"] for k in listed(cfg)} == {mask(own): url, mask(plain): None}
    table = invoke(cfg, "keys", "list")
    header, *rows = table.stdout.splitlines()
    assert "base url" in header
    assert any(mask(own) in r and r.rstrip().endswith(url) for r in rows)
    assert any(mask(plain) in r and r.rstrip().endswith("-") for r in rows)
    shown = invoke(cfg, "keys", "show", key_id_for("openai", own))
    assert f"base url  {url}" in shown.stdout
    assert "base url  - (the pool's)" in invoke(cfg, "keys", "show", key_id_for("openai", plain)).stdout
    assert_no_secret(table.output + shown.output + added.output, own, plain)


def test_the_base_url_column_is_left_out_when_no_key_has_one(cfg: Path) -> None:
    assert invoke(cfg, "keys", "add", "--pool", "openai", new_secret()).exit_code == 0
    assert "base url" not in invoke(cfg, "keys", "list").stdout


@pytest.mark.parametrize(
    "url",
    ["ftp://files.example.com", "my-resource.openai.azure.com", "https://", "https://user:pw@example.com",
     "https://example.com/?api-version=1", "javascript:alert(1)", "https://exa mple.com", "http://host:port"],
)
def test_a_base_url_that_is_not_an_http_url_is_refused_and_nothing_is_stored(
    cfg: Path, tmp_path: Path, url: str
) -> None:
    key = new_secret()
    for command in (["add", "--pool", "openai", "--base-url", url, key], ["import", "--pool", "openai", "--base-url", url, "-"]):
        result = invoke(cfg, "keys", *command, input=key + "\n")
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and "--base-url" in result.stderr
        assert stored(tmp_path) == []


def _transition(rec: KeyRecord, to: KeyState, until: float, now: float) -> Transition:
    return Transition(rec.id, rec.pool, rec.version, rec.state, to, "rate limited", now - 100, until, "traffic", "http 429")


def test_list_shows_and_filters_by_effective_state(cfg: Path, tmp_path: Path) -> None:
    over, cooling, fresh = new_secret(), new_secret(), new_secret()
    assert invoke(cfg, "keys", "add", "--pool", "openai", over, cooling, fresh).exit_code == 0
    now = time.time()

    async def cool(store: SQLiteStore) -> None:
        recs = {r.secret: r for r in await store.load()}
        assert await store.apply(_transition(recs[over], KeyState.COOLING, now - 5, now))
        assert await store.apply(_transition(recs[cooling], KeyState.COOLING, now + 3600, now))
        await store.set_balance(recs[fresh].id, 12.5, "USD")

    with_db(tmp_path, cool)
    by_masked = {k["masked"]: k for k in listed(cfg)}
    assert by_masked[mask(over)]["state"] == "active"  # its cooldown is over
    assert by_masked[mask(cooling)]["state"] == "cooling"
    assert by_masked[mask(cooling)]["reason"] == "rate limited"
    assert [k["masked"] for k in listed(cfg, "--state", "cooling")] == [mask(cooling)]
    assert {k["masked"] for k in listed(cfg, "--state", "active")} == {mask(over), mask(fresh)}
    assert listed(cfg, "--state", "disabled") == []

    table = invoke(cfg, "keys", "list").stdout
    row = next(line for line in table.splitlines() if mask(cooling) in line)
    assert "cooling" in row and "in 59m" in row  # until, as a time from now
    assert "12.5 USD" in next(line for line in table.splitlines() if mask(fresh) in line)
    assert "3 keys: 2 active, 1 cooling" in table


def test_list_with_a_bad_state_lists_the_valid_ones(cfg: Path) -> None:
    result = invoke(cfg, "keys", "list", "--state", "sleepy")
    assert result.exit_code == 2
    for state in ("active", "cooling", "exhausted", "invalid", "disabled"):
        assert state in result.stderr


def test_show_gives_the_key_masked_with_its_events(cfg: Path) -> None:
    a = new_secret()
    kid = key_id_for("openai", a)
    assert invoke(cfg, "keys", "add", "--pool", "openai", a).exit_code == 0
    assert invoke(cfg, "keys", "disable", kid).exit_code == 0
    text = invoke(cfg, "keys", "show", kid)
    assert text.exit_code == 0
    assert mask(a) in text.stdout and "disabled by a person" in text.stdout and "active → disabled" in text.stdout
    assert_no_secret(text.output, a)
    data = json.loads(invoke(cfg, "keys", "show", kid, "--json").stdout)
    assert data["id"] == kid and data["state"] == "disabled" and data["masked"] == mask(a)
    assert [(e["from"], e["to"]) for e in data["events"]] == [("", "active"), ("active", "disabled")]


def test_show_of_an_unknown_id_exits_2(cfg: Path) -> None:
    assert invoke(cfg, "keys", "add", "--pool", "openai", new_secret()).exit_code == 0
    result = invoke(cfg, "keys", "show", "k000000000000")
    assert result.exit_code == 2
    assert result.stderr == "keyrelay: no key with id 'k000000000000'\n"


@pytest.mark.parametrize("args", [("keys", "show"), ("keys", "disable"), ("keys", "remove", "--yes"), ("events", "--key")])
def test_a_key_pasted_where_an_id_belongs_is_echoed_masked(cfg: Path, args: tuple[str, ...]) -> None:
    a = new_secret()
    assert invoke(cfg, "keys", "add", "--pool", "openai", a).exit_code == 0
    result = invoke(cfg, *args, a)
    assert a not in result.output
    assert mask(a) in result.output


# -- disable / enable / remove / events ------------------------------------------------------


def test_disable_enable_and_the_event_history(cfg: Path) -> None:
    a = new_secret()
    kid = key_id_for("openai", a)
    assert invoke(cfg, "keys", "add", "--pool", "openai", a).exit_code == 0
    out = invoke(cfg, "keys", "disable", kid)
    assert out.exit_code == 0 and out.stdout == f"key {kid} (openai, {mask(a)}): active → disabled\n"
    assert listed(cfg)[0]["state"] == "disabled"
    again = invoke(cfg, "keys", "disable", kid)
    assert again.exit_code == 0 and "already disabled" in again.stdout
    assert invoke(cfg, "keys", "enable", kid).stdout.endswith("disabled → active\n")
    assert listed(cfg)[0]["state"] == "active"
    assert invoke(cfg, "keys", "enable", "k000000000000").exit_code == 2

    evs = json.loads(invoke(cfg, "events", "--key", kid, "--json").stdout)
    assert [(e["actor"], e["from"], e["to"], e["reason"]) for e in evs] == [
        ("admin", "", "active", "added"),
        ("admin", "active", "disabled", "disabled by a person"),
        ("admin", "disabled", "active", "enabled by a person"),
    ]
    assert all(e["key_id"] == kid and e["pool"] == "openai" for e in evs)
    assert len(json.loads(invoke(cfg, "events", "--limit", "1", "--json").stdout)) == 1
    table = invoke(cfg, "events")
    assert table.exit_code == 0 and "disabled → active" in table.stdout and kid in table.stdout
    assert_no_secret(table.output, a)


def test_disable_retries_after_a_version_conflict(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = new_secret()
    kid = key_id_for("openai", a)
    assert invoke(cfg, "keys", "add", "--pool", "openai", a).exit_code == 0
    real_apply = SQLiteStore.apply
    calls: list[int] = []

    async def racing_apply(self: SQLiteStore, transition: Transition) -> KeyRecord | None:
        calls.append(transition.expected_version)
        return None if len(calls) == 1 else await real_apply(self, transition)

    monkeypatch.setattr(SQLiteStore, "apply", racing_apply)
    result = invoke(cfg, "keys", "disable", kid)
    assert result.exit_code == 0 and "active → disabled" in result.stdout
    assert len(calls) == 2


def test_remove_asks_and_declining_keeps_the_key(cfg: Path, tmp_path: Path) -> None:
    a = new_secret()
    kid = key_id_for("openai", a)
    assert invoke(cfg, "keys", "add", "--pool", "openai", a).exit_code == 0
    declined = invoke(cfg, "keys", "remove", kid, input="n\n")
    assert declined.exit_code == 1
    assert "for good?" in declined.stdout and "aborted" in declined.stderr
    no_answer = invoke(cfg, "keys", "remove", kid, input="")
    assert no_answer.exit_code == 1
    assert [r.id for r in stored(tmp_path)] == [kid]

    confirmed = invoke(cfg, "keys", "remove", kid, input="y\n")
    assert confirmed.exit_code == 0 and f"removed key {kid}" in confirmed.stdout
    assert stored(tmp_path) == []
    assert invoke(cfg, "keys", "remove", kid, "--yes").exit_code == 2
    evs = json.loads(invoke(cfg, "events", "--json").stdout)
    assert (evs[-1]["key_id"], evs[-1]["to"]) == (kid, "removed")


def test_remove_with_yes_does_not_ask(cfg: Path, tmp_path: Path) -> None:
    a, b = new_secret(), new_secret()
    assert invoke(cfg, "keys", "add", "--pool", "openai", a, b).exit_code == 0
    result = invoke(cfg, "keys", "remove", "--yes", key_id_for("openai", a))
    assert result.exit_code == 0 and "?" not in result.stdout
    assert [r.secret for r in stored(tmp_path)] == [b]
