"""The one redaction: built from the actual keys, it removes every key and every fragment of
8 characters or more of one, whatever the key looks like."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyrelay.core.redaction import MIN_FRAGMENT, SMALL, Redactor, safe_mask

SK = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v2W3x4"
HEX = "9f86d081884c7d659a2feaa0c55ad015"  # prefixless 32-hex (Azure, Mistral, resellers)
GOOGLE = "AIzaSyD" + "x7Jk2LmN9pQ4rS6tU8vW0yZ1aB3cD5eFgH"[:32]  # 39 characters
DASHED = "kx_9Qp-Lm_3Zr-Tt_88-Vv_wq"  # '-' and '_' inside
CANARIES = (SK, HEX, GOOGLE, DASHED)


def leaked(text: str, key: str) -> list[str]:
    """Every fragment of ``key`` of MIN_FRAGMENT characters found in ``text``."""
    return [key[i : i + MIN_FRAGMENT] for i in range(len(key) - MIN_FRAGMENT + 1) if key[i : i + MIN_FRAGMENT] in text]


def test_google_canary_has_the_real_length():
    assert len(GOOGLE) == 39 and len(HEX) == 32


@pytest.mark.parametrize("key", CANARIES)
def test_a_whole_key_becomes_its_mask_and_fragments_become_an_ellipsis(key):
    r = Redactor(CANARIES)
    out = r.text(f"key {key}, then part {key[5:17]} and {key[-9:]}; quoted '{key}'")
    for k in CANARIES:
        assert leaked(out, k) == []
    assert safe_mask(key) in out and out.count("…") >= 4


def test_a_prefix_long_enough_to_be_a_fragment_is_not_shown_by_the_mask():
    key = "sk-svcacct-" + "Zz9" * 12
    assert safe_mask(key) == "…" + key[-4:]
    assert safe_mask(SK).startswith("sk-…")


@pytest.mark.parametrize("key", CANARIES)
def test_bytes_in_any_encoding_around_the_key(key):
    r = Redactor([key])
    raw = "é ".encode("latin-1") + key.encode() + b"\xff\xfe" + key[3:14].encode()
    out = r.data(raw)
    assert leaked(out.decode("latin-1"), key) == []
    assert out.startswith("é ".encode("latin-1"))


def test_text_without_keys_is_returned_as_is():
    r = Redactor(CANARIES)
    s = '{"error": {"message": "Rate limit reached for gpt-4o-mini", "code": "rate_limit_exceeded"}}'
    assert r.text(s) is s
    assert r.data(s.encode()) == s.encode()
    assert not Redactor(()).leaks(SK)


def test_seven_characters_are_not_a_fragment():
    r = Redactor([HEX])
    assert r.text("id " + HEX[:7]) == "id " + HEX[:7]
    assert r.text("id " + HEX[:8]) == "id …"


def test_header_values_seen_clean_are_remembered_and_keys_still_caught():
    r = Redactor(CANARIES)
    assert r.value("application/json") == "application/json"
    assert r.value("req_" + "0" * 32) == "req_" + "0" * 32
    assert leaked(r.value(f'Bearer realm="api", error="invalid_token", key="{GOOGLE}"'), GOOGLE) == []


@given(
    key=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=80),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    start=st.integers(0, 80),
    length=st.integers(MIN_FRAGMENT, 80),
)
def test_no_fragment_of_any_printable_key_survives(key, before, after, start, length):
    frag = key[start : start + length]
    r = Redactor([key])
    out = r.text(before + frag + after + key)
    assert leaked(out, key) == []


# -- a big pool: the windows in a Bloom filter, every "maybe" confirmed in the keys --------------


def _big_pool() -> list[str]:
    import random

    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    made = ["".join(rng.choice(alphabet) for _ in range(40)) for _ in range(SMALL)]
    return [*CANARIES, *made]


BIG = _big_pool()
BIG_REDACTOR = Redactor(BIG)


def test_a_big_pool_redacts_its_keys_and_fragments_like_a_small_one():
    small = Redactor(CANARIES)
    assert BIG_REDACTOR.size > SMALL
    for key in (*CANARIES, BIG[-1], BIG[SMALL // 2]):
        text = f"key {key}, then part {key[5:17]} and {key[-9:]}; quoted '{key}'"
        out = BIG_REDACTOR.text(text)
        assert leaked(out, key) == [], out
        assert safe_mask(key) in out
        if key in CANARIES:
            assert out == small.text(text)
        assert leaked(BIG_REDACTOR.data(text.encode()).decode(), key) == []
        assert BIG_REDACTOR.leaks(key[10:18])


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_ :\"", min_size=0, max_size=300))
def test_a_big_pool_leaves_text_without_keys_alone(text):
    """The filter's false positives are confirmed away: innocent text comes back unchanged."""
    if not any(k[i : i + MIN_FRAGMENT] in text for k in BIG for i in range(len(k) - MIN_FRAGMENT + 1)):
        assert BIG_REDACTOR.text(text) == text


def test_many_fragments_of_many_keys_in_one_text_are_all_redacted():
    """Past the searches one text may cost, a "maybe" counts as a match: more is redacted, never less."""
    pieces = [k[3:12] for k in BIG[5:205]]  # 200 fragments of 200 keys, each its own run
    out = BIG_REDACTOR.text(" ".join(pieces))
    for k, piece in zip(BIG[5:205], pieces, strict=True):
        assert piece not in out, k


@pytest.mark.parametrize("redactor", [Redactor(CANARIES), BIG_REDACTOR], ids=["set", "filter"])
def test_every_8_character_fragment_is_found_at_every_offset_of_a_run(redactor):
    """The first look at a run takes a piece every few characters: a fragment of exactly
    MIN_FRAGMENT characters is caught wherever it starts in the run."""
    key = SK
    for start in range(3, len(key) - MIN_FRAGMENT + 1):  # past the shown "sk-"
        fragment = key[start : start + MIN_FRAGMENT]
        for pad in range(9):
            text = f"{'q' * pad}{fragment}{'z' * (pad % 3)}"
            assert fragment not in redactor.text(text), (start, pad)
            assert redactor.leaks(text)
