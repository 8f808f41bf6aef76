"""Masking and redaction: the only forms in which a key may ever be shown."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyrelay.core.masking import InvalidSecret, mask, redact, validate_secret

OPENAI = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v2W3x4"
PROJECT = "sk-proj-" + "Zy9Xw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe" * 4 + "Qz7T"
GOOGLE = "AIzaSyD" + "x7Jk2LmN9pQ4rS6tU8vW0yZ1aB3cD5e"
ANTHROPIC = "sk-ant-api03-" + "Lm4Np6Qr8St0Uv2Wx4Yz6Ab8Cd0Ef2Gh4Ij6Kl8Mn0Op2Qr4St6Uv8Wx0Yz2Ab4Cd6Ef8Gh0Ij2Kl4" + "-AA"
GROQ = "gsk_" + "Q2w3E4r5T6y7U8i9O0p1A2s3D4f5G6h7J8k9L0z1X2c3V4b5N6m7"


#: The longest public prefix a mask may keep (it names the provider, not the key).
LONGEST_PUBLIC_PREFIX = len("sk-ant-api03-")


def shown(masked: str, secret: str) -> tuple[str, str]:
    """The start and the end of ``secret`` that a mask shows."""
    head, sep, tail = masked.partition("…")
    assert sep, f"{masked!r} has no ellipsis"
    assert secret.startswith(head) and secret.endswith(tail)
    return head, tail


def visible(masked: str, secret: str) -> int:
    head, tail = shown(masked, secret)
    return len(head) + len(tail)


MASKS = {
    "openai key keeps sk- and the last four": (OPENAI, "sk-…W3x4"),
    "project key keeps sk-proj- and the last four": (PROJECT, "sk-proj-…Qz7T"),
    "groq key keeps gsk_ and the last four": (GROQ, "gsk_…" + GROQ[-4:]),
    "google key keeps AIza and the last four": (GOOGLE, "AIza…" + GOOGLE[-4:]),
    "anthropic key keeps sk-ant-api03- and the last four": (ANTHROPIC, "sk-ant-api03-…" + ANTHROPIC[-4:]),
    "a short prefixed key drops its prefix": ("sk-proj-abc123XYZW", "…XYZW"),
    "a key without a prefix shows only the last four": ("0123456789abcdef0123", "…0123"),
    "a short key shows only its last two": ("abcdefgh", "…gh"),
    "a tiny key shows nothing": ("abcd", "…"),
    "an empty value shows nothing": ("", "…"),
}


@pytest.mark.parametrize(("secret", "expected"), MASKS.values(), ids=MASKS.keys())
def test_mask_keeps_a_recognisable_prefix_and_the_last_four(secret: str, expected: str) -> None:
    assert mask(secret) == expected


@pytest.mark.parametrize("secret", [OPENAI, PROJECT, GOOGLE, GROQ, "sk-" + "x" * 500, "Abcdefgh_Ijklmnop_" + "z" * 60])
def test_mask_of_a_long_key_shows_at_most_twelve_characters(secret: str) -> None:
    assert visible(mask(secret), secret) <= 12


@pytest.mark.parametrize("secret", [OPENAI, PROJECT, GOOGLE, GROQ, ANTHROPIC])
def test_mask_shows_nothing_of_a_key_but_its_public_prefix_and_last_four(secret: str) -> None:
    head, tail = shown(mask(secret), secret)
    assert len(tail) == 4
    assert len(head) <= LONGEST_PUBLIC_PREFIX
    assert head.rstrip("-_") in {"sk", "sk-proj", "gsk", "AIza", "sk-ant-api03"}


@pytest.mark.parametrize(
    "secret", ["abcdef_ghijk", "abcdef-ghijkl", "sk-123456789", "sk-proj-abc123XYZW", "ab-cd-efghijklm"]
)
def test_mask_of_a_short_prefixed_key_does_not_reveal_most_of_it(secret: str) -> None:
    assert visible(mask(secret), secret) <= len(secret) // 2


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=80))
def test_mask_never_reveals_more_than_half_of_any_key(secret: str) -> None:
    m = mask(secret)
    head, tail = shown(m, secret)
    assert len(head) + len(tail) <= len(secret) // 2
    assert len(tail) <= 4 and len(head) <= LONGEST_PUBLIC_PREFIX
    if len(secret) >= 8:
        assert secret not in m


def test_the_record_and_the_mask_agree() -> None:
    from keyrelay.core.model import KeyRecord

    rec = KeyRecord(id="k", pool="p", secret=OPENAI)
    assert rec.masked == mask(OPENAI)
    assert OPENAI not in repr(rec)


# -- redact --------------------------------------------------------------------------------

REDACT = {
    "a known secret": (f"upstream said: bad key {OPENAI}!", [OPENAI], [OPENAI, OPENAI[3:-4]]),
    "a known secret without a key shape": (
        "token=hunter2hunter2hunter2 rejected",
        ["hunter2hunter2hunter2"],
        ["hunter2hunter"],
    ),
    "an openai key in text": (f"Authorization: Bearer {OPENAI}", [], [OPENAI[3:-4]]),
    "a project key in text": (f"key {PROJECT} was leaked", [], [PROJECT[8:-4]]),
    "a google key in a url": (f"GET https://x.googleapis.com/v1/models?key={GOOGLE} failed", [], [GOOGLE[4:-4]]),
    "a groq key": (f"invalid api key: {GROQ}", [], [GROQ[4:-4]]),
    "a masked echo ****fcc2": ("Incorrect API key provided: ****fcc2.", [], ["****fcc2"]),
    "an openai-style partial echo": (
        "Incorrect API key provided: sk-PMafP***************************************E873. You can find your API key",
        [],
        ["PMafP", "***"],
    ),
    "a project-key partial echo": ("Incorrect API key provided: sk-proj-AbCd*****…WxYz.", [], ["AbCd", "WxYz"]),
    "a gemini consumer id": ("Quota exceeded for consumer 'api_key:AIzaSyXYZ123abc'", [], ["AIzaSyXYZ123abc"]),
}


@pytest.mark.parametrize(("text", "secrets", "gone"), REDACT.values(), ids=REDACT.keys())
def test_redact_removes_keys_and_their_echoes(text: str, secrets: list[str], gone: list[str]) -> None:
    out = redact(text, secrets)
    for fragment in gone:
        assert fragment not in out


def test_redact_keeps_the_rest_of_the_message() -> None:
    out = redact(f"Incorrect API key provided: {OPENAI}. You can find your API key at https://x.", [OPENAI])
    assert out.startswith("Incorrect API key provided: ")
    assert "You can find your API key at https://x." in out


@pytest.mark.parametrize(
    "text",
    [
        "You exceeded your current quota, please check your plan and billing details.",
        "This model's maximum context length is 8192 tokens.",
        "the risk-assessment and task-scheduler services are down",
        "Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min (TPM): Limit 200000",
    ],
)
def test_redact_leaves_ordinary_messages_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_ignores_empty_secrets() -> None:
    assert redact("nothing to see", ["", "absent-secret"]) == "nothing to see"


# -- validate_secret -----------------------------------------------------------------------

BAD = {
    "empty": "",
    "a space": "sk-abc def0123456789",
    "leading whitespace": " sk-abcdef0123456789",
    "trailing newline": "sk-abcdef0123456789\n",
    "CR LF injection": "sk-abcdef0123456789\r\nX-Evil: 1",
    "a tab": "sk-abcdef\t0123456789",
    "non-ascii": "sk-abcdéf0123456789",
    "a zero-width space": "sk-abcdef\u200b0123456789",
    "a control character": "sk-abcdef\x000123456789",
    "DEL": "sk-abcdef\x7f0123456789",
    "too long": "sk-" + "a" * 510,
}


@pytest.mark.parametrize("secret", BAD.values(), ids=BAD.keys())
def test_unstorable_keys_are_refused_without_showing_them(secret: str) -> None:
    with pytest.raises(InvalidSecret) as info:
        validate_secret(secret)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    if secret:
        assert secret not in message
        assert secret.strip() not in message
        assert "abcdef" not in message and "aaaaaaaa" not in message
    assert "\n" not in message and "\r" not in message  # one log line, whatever the key held


@pytest.mark.parametrize(
    "secret", [OPENAI, PROJECT, GOOGLE, GROQ, ANTHROPIC, "x", "a" * 512, "key~!@#$%^&*()_+{}|:<>?"]
)
def test_printable_ascii_keys_are_accepted_as_given(secret: str) -> None:
    assert validate_secret(secret) == secret


@pytest.mark.parametrize("secret", [OPENAI, PROJECT, GROQ, GOOGLE, ANTHROPIC])
def test_redact_leaves_a_masked_key_readable(secret: str) -> None:
    line = f"key state pool=openai masked={mask(secret)} active -> invalid"
    assert redact(line) == line
