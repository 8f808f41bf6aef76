"""The Store contract: every backend in ``conftest.BACKENDS`` must pass all of these alike."""

from __future__ import annotations

import pytest

from keyrelay.core.model import Counters, Event, KeyRecord, KeyState, Transition
from keyrelay.stores.base import Changes, Store, hash_token, key_id_for
from keyrelay.stores.usage import HOUR, MINUTE, key_scope

NOW = 1_700_000_000.0


def cool(rec: KeyRecord, at: float = NOW + 10, until: float = NOW + 70, **kw: str) -> Transition:
    return Transition(
        rec.id, rec.pool, rec.version, rec.state, KeyState.COOLING, kw.get("reason", "rate limited"), at, until,
        kw.get("actor", "traffic"), kw.get("detail", "http 429"),
    )


async def add_one(store: Store, secret: str = "sk-one", pool: str = "openai") -> KeyRecord:
    (rec,) = (await store.add_keys(pool, [secret], NOW)).added
    return rec


# -- keys -------------------------------------------------------------------------------------


async def test_store_satisfies_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


async def test_added_keys_load_back_active_with_their_secret_and_zero_counters(store: Store) -> None:
    result = await store.add_keys("openai", ["sk-a", "sk-b"], NOW, weight=2.0, label="team")

    assert result.duplicates == ()
    loaded = {r.secret: r for r in await store.load()}
    assert set(loaded) == {"sk-a", "sk-b"}
    for secret, rec in loaded.items():
        assert rec.id == key_id_for("openai", secret)
        assert rec.pool == "openai"
        assert rec.state is KeyState.ACTIVE
        assert rec.version == 1
        assert (rec.since, rec.until, rec.added_at) == (NOW, 0.0, NOW)
        assert (rec.weight, rec.label) == (2.0, "team")
        assert rec.counters == Counters()
        assert (rec.balance, rec.currency) == (None, "")
    assert sorted(result.added, key=lambda r: r.secret) == sorted(loaded.values(), key=lambda r: r.secret)


async def test_get_returns_the_key_or_none(store: Store) -> None:
    rec = await add_one(store)

    assert await store.get(rec.id) == rec
    assert await store.get("k-missing") is None


async def test_keys_already_in_the_pool_are_reported_and_not_added_again(store: Store) -> None:
    first = await store.add_keys("openai", ["sk-a", "sk-a", "sk-b"], NOW)
    second = await store.add_keys("openai", ["sk-b", "sk-c"], NOW + 1)

    assert [r.secret for r in first.added] == ["sk-a", "sk-b"]
    assert first.duplicates == (key_id_for("openai", "sk-a"),)
    assert [r.secret for r in second.added] == ["sk-c"]
    assert second.duplicates == (key_id_for("openai", "sk-b"),)
    assert sorted(r.secret for r in await store.load()) == ["sk-a", "sk-b", "sk-c"]
    added_events = [e for e in await store.events() if e.reason == "added"]
    assert len(added_events) == 3


async def test_a_duplicate_keeps_its_state_and_history(store: Store) -> None:
    rec = await add_one(store)
    await store.apply(cool(rec))

    result = await store.add_keys("openai", ["sk-one"], NOW + 100)

    assert result.added == ()
    kept = await store.get(rec.id)
    assert kept is not None and kept.state is KeyState.COOLING and kept.added_at == NOW


async def test_the_same_secret_in_two_pools_is_two_keys(store: Store) -> None:
    a = await add_one(store, "sk-shared", "openai")
    b = await add_one(store, "sk-shared", "azure")

    assert a.id != b.id
    assert {r.pool for r in await store.load()} == {"openai", "azure"}


async def test_load_with_a_pool_returns_only_that_pool(store: Store) -> None:
    await store.add_keys("openai", ["sk-1", "sk-2"], NOW)
    await store.add_keys("azure", ["sk-3"], NOW)

    assert sorted(r.secret for r in await store.load("openai")) == ["sk-1", "sk-2"]
    assert [r.secret for r in await store.load("azure")] == ["sk-3"]
    assert await store.load("nowhere") == []
    assert len(await store.load()) == 3


async def test_a_key_keeps_its_own_base_url_through_load_get_changes_and_transitions(store: Store) -> None:
    url = "https://my-resource.openai.azure.com"
    (own,) = (await store.add_keys("azure", ["az-key-1"], NOW, base_url=url)).added
    plain = await add_one(store, "az-key-2", "azure")

    assert (own.base_url, plain.base_url) == (url, None)
    assert {r.secret: r.base_url for r in await store.load("azure")} == {"az-key-1": url, "az-key-2": None}
    assert await store.get(own.id) == own
    cooled = await store.apply(cool(own))
    assert cooled is not None and cooled.base_url == url
    assert {r.id: r.base_url for r in (await store.changes(0)).records} == {own.id: url, plain.id: None}


@pytest.mark.parametrize(
    "secret",
    ["sk-proj-EVIDENCEa1b2c3d4e5f6g7h8", "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "AIzaSyEVIDENCE_0123-456789abcdef"],
)
async def test_a_key_echoed_into_evidence_is_never_stored(store: Store, secret: str) -> None:
    (rec,) = (await store.add_keys("openai", [secret], NOW)).added
    echo = f"upstream said: {secret} / code {secret[5:20]}"
    t = cool(rec, reason=f"rate limited ({secret})", detail=echo)

    new = await store.apply(t)
    await store.record_event(Event(rec.id, "openai", NOW + 20, "checker", "cooling", "cooling", f"said {secret}", echo))

    assert new is not None and secret not in new.reason
    stored = [e for e in await store.events(rec.id) if e.actor != "admin"]
    assert len(stored) == 2
    now = await store.get(rec.id)
    assert now is not None
    text = " ".join(f"{e.reason} {e.detail}" for e in stored) + " " + now.reason
    assert not any(secret[i:i + 8] in text for i in range(8, len(secret) - 7))
    assert "upstream said:" in text and "said" in stored[1].reason  # the evidence is kept, only the key is gone


async def test_adding_records_an_added_event_by_admin(store: Store) -> None:
    rec = await add_one(store)

    (event,) = await store.events(rec.id)
    assert (event.key_id, event.pool, event.at, event.actor) == (rec.id, "openai", NOW, "admin")
    assert (event.from_state, event.to_state, event.reason) == ("", "active", "added")


# -- transitions ------------------------------------------------------------------------------


async def test_apply_moves_the_key_bumps_its_version_and_records_the_event(store: Store) -> None:
    rec = await add_one(store)
    t = cool(rec, actor="probe", detail="http 429, code rate_limit")

    new = await store.apply(t)

    assert new == t.applied_to(rec)
    assert new is not None and new.version == 2 and new.state is KeyState.COOLING
    assert await store.get(rec.id) == new
    last = (await store.events(rec.id))[-1]
    assert (last.from_state, last.to_state, last.reason) == ("active", "cooling", "rate limited")
    assert (last.actor, last.detail, last.at, last.pool) == ("probe", "http 429, code rate_limit", NOW + 10, "openai")


async def test_cooling_until_survives_a_reload(store: Store) -> None:
    rec = await add_one(store)
    await store.apply(cool(rec, until=NOW + 300))

    (loaded,) = await store.load("openai")
    assert loaded.state is KeyState.COOLING
    assert loaded.until == NOW + 300
    assert loaded.since == NOW + 10
    assert not loaded.eligible(NOW + 299) and loaded.eligible(NOW + 300)


async def test_a_transition_to_the_same_state_keeps_since(store: Store) -> None:
    rec = await add_one(store)
    first = await store.apply(cool(rec, at=NOW + 10, until=NOW + 70))
    assert first is not None

    again = await store.apply(cool(first, at=NOW + 20, until=NOW + 200))

    assert again is not None and (again.since, again.until, again.version) == (NOW + 10, NOW + 200, 3)
    assert await store.get(rec.id) == again


async def test_a_burst_of_re_coolings_is_one_event_and_the_later_deadline_wins(store: Store) -> None:
    rec = await add_one(store)
    other = await add_one(store, "sk-other")
    cooled = await store.apply(cool(rec, at=NOW, until=NOW + 30))
    assert cooled is not None
    for i in range(1, 6):  # in-flight requests answered 429 one after another, each a bit later
        if i == 3:  # another key's event in between changes nothing
            await store.apply(cool(other, at=NOW + i / 10, until=NOW + 50))
        cooled = await store.apply(cool(cooled, at=NOW + i / 10, until=NOW + 30 + i, detail=f"http 429 #{i}"))
        assert cooled is not None

    assert (cooled.until, cooled.version) == (NOW + 35, 7)
    assert (await store.get(rec.id)) == cooled
    mine = [e for e in await store.events(rec.id) if e.reason != "added"]
    assert [(e.from_state, e.to_state) for e in mine] == [("active", "cooling"), ("cooling", "cooling")]
    assert (mine[1].at, mine[1].detail) == (NOW + 0.5, "http 429 #5")  # the latest evidence
    everything = await store.events(limit=0)
    assert [e.seq for e in everything] == sorted(e.seq for e in everything)
    assert mine[1] in everything and len([e for e in everything if e.key_id == rec.id]) == 3

    later = await store.apply(cool(cooled, at=NOW + 60, until=NOW + 120, detail="http 429 later"))
    assert later is not None
    assert len([e for e in await store.events(rec.id) if e.reason != "added"]) == 3  # outside the window: new


async def test_apply_with_a_stale_version_is_refused_and_changes_nothing(store: Store) -> None:
    rec = await add_one(store)
    assert await store.apply(cool(rec)) is not None
    before = await store.get(rec.id)
    events_before = await store.events()
    cursor_before = (await store.changes(0)).cursor

    stale = Transition(rec.id, rec.pool, rec.version, KeyState.ACTIVE, KeyState.INVALID, "401", NOW + 20)
    assert await store.apply(stale) is None

    assert await store.get(rec.id) == before
    assert await store.events() == events_before
    assert (await store.changes(0)).cursor == cursor_before


async def test_apply_on_a_missing_key_returns_none(store: Store) -> None:
    ghost = Transition("k-missing", "openai", 1, KeyState.ACTIVE, KeyState.DISABLED, "disabled", NOW)

    assert await store.apply(ghost) is None
    assert await store.events() == []


# -- removal ----------------------------------------------------------------------------------


async def test_remove_deletes_the_key_records_an_event_and_shows_in_changes(store: Store) -> None:
    rec = await add_one(store)
    other = await add_one(store, "sk-other")
    cursor = (await store.changes(0)).cursor

    assert await store.remove(rec.id, NOW + 5, actor="alice") is True

    assert await store.get(rec.id) is None
    assert await store.load() == [other]
    last = (await store.events(rec.id))[-1]
    assert (last.from_state, last.to_state, last.actor, last.at) == ("active", "removed", "alice", NOW + 5)
    changed = await store.changes(cursor)
    assert changed.removed == (rec.id,) and changed.records == ()
    assert changed.cursor > cursor
    assert rec.id in (await store.changes(0)).removed
    assert await store.remove(rec.id, NOW + 6) is False


async def test_a_removed_key_can_be_added_again(store: Store) -> None:
    rec = await add_one(store)
    await store.apply(cool(rec))
    await store.remove(rec.id, NOW + 5)
    cursor = (await store.changes(0)).cursor

    again = await add_one(store)

    assert again.state is KeyState.ACTIVE and again.version == 1
    changed = await store.changes(cursor)
    assert [r.id for r in changed.records] == [rec.id] and changed.removed == ()


# -- changes ----------------------------------------------------------------------------------


async def test_changes_from_zero_return_every_key_and_a_cursor(store: Store) -> None:
    empty = await store.changes(0)
    assert empty.records == () and empty.removed == ()

    await store.add_keys("openai", ["sk-1", "sk-2"], NOW)
    await store.add_keys("azure", ["sk-3"], NOW)

    changed = await store.changes(0)
    assert sorted(r.secret for r in changed.records) == ["sk-1", "sk-2", "sk-3"]
    assert changed.cursor > empty.cursor
    assert await store.changes(changed.cursor) == Changes(changed.cursor)


async def test_changes_after_a_cursor_return_just_the_transitioned_key(store: Store) -> None:
    a = await add_one(store, "sk-a")
    await add_one(store, "sk-b")
    cursor = (await store.changes(0)).cursor

    new = await store.apply(cool(a))

    changed = await store.changes(cursor)
    assert changed.records == (new,)
    assert changed.removed == ()
    assert changed.cursor > cursor


# -- counters and balance ---------------------------------------------------------------------


async def test_counters_add_up_and_do_not_count_as_changes(store: Store) -> None:
    a = await add_one(store, "sk-a")
    b = await add_one(store, "sk-b")
    cursor = (await store.changes(0)).cursor

    await store.add_counters({a.id: Counters(requests=2, successes=1, rate_limited=1, prompt_tokens=30)})
    await store.add_counters({a.id: Counters(requests=1, successes=1, completion_tokens=7), b.id: Counters(requests=5)})
    await store.add_counters({"k-missing": Counters(requests=9)})
    await store.add_counters({})

    got = {r.id: r.counters for r in await store.load()}
    assert got[a.id] == Counters(requests=3, successes=2, rate_limited=1, prompt_tokens=30, completion_tokens=7)
    assert got[b.id] == Counters(requests=5)
    assert await store.changes(cursor) == Changes(cursor)


async def test_a_flush_of_key_sums_adds_to_counters_and_to_the_keys_usage(store: Store) -> None:
    """``add_key_sums`` (the gateway's counter flush): one row per key, in COUNTER_FIELDS order."""
    at = 1_800_000_020.0  # usage buckets in the future: Redis lets past ones expire at once
    a = await add_one(store, "sk-sums-a")
    b = await add_one(store, "sk-sums-b")
    await store.add_counters({a.id: Counters(requests=1, successes=1)})
    first = Counters(requests=3, successes=2, rate_limited=1, prompt_tokens=30, completion_tokens=12)

    await store.add_key_sums(at, {a.id: list(first.values()), b.id: list(Counters(requests=2, network_error=2).values()),
                                   "k-missing": list(Counters(requests=9).values())})
    await store.add_key_sums(at + 1, {a.id: list(Counters(requests=1, successes=1).values())})
    await store.add_key_sums(at, {})

    got = {r.id: r.counters for r in await store.load()}
    assert got[a.id] == Counters(requests=5, successes=4, rate_limited=1, prompt_tokens=30, completion_tokens=12)
    assert got[b.id] == Counters(requests=2, network_error=2)
    minutes = await store.usage(key_scope(a.id), MINUTE, at - MINUTE, at + MINUTE)
    assert [c for _, c in minutes] == [first.plus(Counters(requests=1, successes=1))]  # at and at + 1: one minute
    hours = await store.usage(key_scope(b.id), HOUR, at - HOUR, at + HOUR)
    assert [c for _, c in hours] == [Counters(requests=2, network_error=2)]


async def test_a_key_removed_and_added_again_starts_counting_from_zero(store: Store) -> None:
    rec = await add_one(store, "sk-again-0123456789")
    await store.add_counters({rec.id: Counters(requests=3, successes=3)})
    assert await store.remove(rec.id, NOW)
    await store.add_counters({rec.id: Counters(requests=1)})  # a flush that raced the removal: dropped

    again = await add_one(store, "sk-again-0123456789")

    assert again.id == rec.id
    assert [r.counters for r in await store.load()] == [Counters()]


async def test_counters_survive_a_transition(store: Store) -> None:
    rec = await add_one(store)
    await store.add_counters({rec.id: Counters(requests=4, invalid_key=1)})

    new = await store.apply(cool(rec))

    assert new is not None and new.counters == Counters(requests=4, invalid_key=1)
    assert (await store.changes(0)).records[0].counters == Counters(requests=4, invalid_key=1)


async def test_set_balance_round_trips_and_is_not_a_change(store: Store) -> None:
    rec = await add_one(store)
    cursor = (await store.changes(0)).cursor

    await store.set_balance(rec.id, 12.5, "USD")
    got = await store.get(rec.id)
    assert got is not None and (got.balance, got.currency) == (12.5, "USD")

    await store.set_balance(rec.id, None, "")
    got = await store.get(rec.id)
    assert got is not None and (got.balance, got.currency) == (None, "")
    await store.set_balance("k-missing", 1.0, "USD")
    assert (await store.changes(cursor)).records == ()


# -- events -----------------------------------------------------------------------------------


async def test_recorded_events_are_kept_oldest_first_and_filtered_by_key(store: Store) -> None:
    a = await add_one(store, "sk-a")
    b = await add_one(store, "sk-b")
    for i in range(5):
        await store.record_event(Event(a.id, "openai", NOW + i, "probe", "active", "active", f"probe {i}", "ok"))
    await store.record_event(Event(b.id, "openai", NOW + 9, "probe", "active", "active", "probe b"))

    mine = await store.events(a.id)
    assert [e.reason for e in mine] == ["added"] + [f"probe {i}" for i in range(5)]
    assert mine[1] == Event(a.id, "openai", NOW, "probe", "active", "active", "probe 0", "ok", seq=mine[1].seq)
    assert [e.seq for e in mine] == sorted(e.seq for e in mine)
    assert [e.reason for e in await store.events(b.id)] == ["added", "probe b"]
    assert len(await store.events()) == 8
    assert await store.events("k-missing") == []


async def test_events_limit_returns_the_last_n_oldest_first(store: Store) -> None:
    rec = await add_one(store)
    for i in range(10):
        await store.record_event(Event(rec.id, "openai", NOW + i, "probe", "active", "active", f"probe {i}"))

    assert [e.reason for e in await store.events(rec.id, limit=3)] == ["probe 7", "probe 8", "probe 9"]
    assert [e.reason for e in await store.events(limit=2)] == ["probe 8", "probe 9"]
    assert len(await store.events(rec.id)) == 11


# -- client tokens ----------------------------------------------------------------------------


async def test_a_created_token_is_found_by_its_hash_and_listed(store: Store) -> None:
    h = hash_token("kr-secret-1")
    tok = await store.create_token("ci", ["openai", "azure"], h, NOW)

    assert tok.id == "t" + h[:10]
    assert (tok.name, tok.pools, tok.token_hash, tok.created_at, tok.revoked) == (
        "ci", ("openai", "azure"), h, NOW, False
    )
    assert await store.find_token(h) == tok
    assert await store.find_token(hash_token("kr-other")) is None
    await store.create_token("dev", ["openai"], hash_token("kr-secret-2"), NOW + 1)
    assert [t.name for t in await store.list_tokens()] == ["ci", "dev"]


@pytest.mark.parametrize("by", ["name", "id"])
async def test_a_revoked_token_is_no_longer_found(store: Store, by: str) -> None:
    h = hash_token("kr-secret")
    tok = await store.create_token("ci", ["openai"], h, NOW)

    assert await store.revoke_token(tok.name if by == "name" else tok.id, NOW + 1) is True

    assert await store.find_token(h) is None
    (listed,) = await store.list_tokens()
    assert listed.revoked and listed.revoked_at == NOW + 1
    assert await store.revoke_token(tok.name, NOW + 2) is False
    assert await store.revoke_token("nobody", NOW + 2) is False


async def test_a_second_live_token_with_the_same_name_is_refused(store: Store) -> None:
    await store.create_token("ci", ["openai"], hash_token("kr-1"), NOW)

    with pytest.raises(ValueError, match="ci"):
        await store.create_token("ci", ["azure"], hash_token("kr-2"), NOW + 1)
    assert len(await store.list_tokens()) == 1


async def test_a_name_can_be_reused_after_its_token_is_revoked(store: Store) -> None:
    await store.create_token("ci", ["openai"], hash_token("kr-1"), NOW)
    await store.revoke_token("ci", NOW + 1)

    new = await store.create_token("ci", ["azure"], hash_token("kr-2"), NOW + 2)

    assert await store.find_token(hash_token("kr-2")) == new
    assert await store.find_token(hash_token("kr-1")) is None
    assert [(t.name, t.revoked) for t in await store.list_tokens()] == [("ci", True), ("ci", False)]


# -- locks (one probe sweep at a time) ------------------------------------------------------------


async def test_a_free_lock_is_taken_and_a_second_owner_is_refused(store: Store) -> None:
    assert await store.try_lock("checker:openai", "gw-a", 30.0, NOW) is True

    assert await store.try_lock("checker:openai", "gw-b", 30.0, NOW + 10) is False
    assert await store.try_lock("checker:azure", "gw-b", 30.0, NOW + 10) is True  # another name is free


async def test_the_owner_may_take_its_lock_again_and_so_extends_it(store: Store) -> None:
    await store.try_lock("sweep", "gw-a", 30.0, NOW)

    assert await store.try_lock("sweep", "gw-a", 30.0, NOW + 20) is True
    assert await store.try_lock("sweep", "gw-b", 30.0, NOW + 40) is False  # held until NOW + 50 now


async def test_an_expired_lock_can_be_taken_over(store: Store) -> None:
    await store.try_lock("sweep", "gw-a", 30.0, NOW)

    assert await store.try_lock("sweep", "gw-b", 30.0, NOW + 30) is True
    assert await store.try_lock("sweep", "gw-a", 30.0, NOW + 31) is False


async def test_unlock_by_a_non_owner_is_ignored(store: Store) -> None:
    await store.try_lock("sweep", "gw-a", 30.0, NOW)

    await store.unlock("sweep", "gw-b")

    assert await store.try_lock("sweep", "gw-b", 30.0, NOW + 1) is False


async def test_unlock_by_the_owner_frees_the_lock(store: Store) -> None:
    await store.try_lock("sweep", "gw-a", 30.0, NOW)

    await store.unlock("sweep", "gw-a")
    await store.unlock("never-taken", "gw-a")  # harmless

    assert await store.try_lock("sweep", "gw-b", 30.0, NOW + 1) is True


# -- lifecycle --------------------------------------------------------------------------------


async def test_opening_twice_is_harmless(store: Store) -> None:
    rec = await add_one(store)

    await store.open()

    assert await store.load() == [rec]
    assert len(await store.events()) == 1
