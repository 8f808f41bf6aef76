"""Reading the waits upstreams ask for: retry-after, retry-after-ms, x-ratelimit-reset-*."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from keyrelay.core.durations import parse_duration, retry_after_from_headers

NOW = 1_700_000_000.0


def http_date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, tz=UTC), usegmt=True)


DURATIONS = {
    "6m0s": 360.0,
    "1.2s": 1.2,
    "20ms": 0.02,
    "2m59.56s": 179.56,
    "1h": 3600.0,
    "1h2m3s": 3723.0,
    "500us": 0.0005,
    "20": 20.0,
    "0.5": 0.5,
    "0": 0.0,
    " 7 ": 7.0,
}


@pytest.mark.parametrize(("text", "seconds"), DURATIONS.items(), ids=DURATIONS.keys())
def test_durations_are_read_in_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


UNREADABLE = ["", "   ", "abc", "-5", "-1s", "-0.5", "nan", "inf", "5 minutes", "1x", "s", "1.s"]


@pytest.mark.parametrize("text", UNREADABLE)
def test_unreadable_or_negative_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None
    assert parse_duration(text, now=NOW) is None


def test_an_http_date_is_seconds_from_now() -> None:
    assert parse_duration(http_date(NOW + 120), now=NOW) == pytest.approx(120.0)


def test_an_http_date_in_the_past_means_no_wait() -> None:
    assert parse_duration(http_date(NOW - 600), now=NOW) == 0.0


def test_an_http_date_without_now_cannot_be_read() -> None:
    assert parse_duration(http_date(NOW + 120)) is None


@pytest.fixture
def local_time_far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available")
    monkeypatch.setenv("TZ", "XYZ-05:30")  # POSIX form: five and a half hours east of UTC
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_time_far_from_utc")
@pytest.mark.parametrize("zone", ["GMT", "+0000", "-0000"])
def test_an_http_date_does_not_depend_on_the_local_time_zone(zone: str) -> None:
    date = http_date(NOW + 90).replace("GMT", zone)  # "-0000": UTC, with no word on the local zone

    assert parse_duration(date, now=NOW) == pytest.approx(90.0)


# -- retry_after_from_headers ----------------------------------------------------------------

HEADERS: dict[str, tuple[dict[str, str], float | None]] = {
    "retry-after-ms wins over everything": (
        {"retry-after-ms": "1500", "retry-after": "20", "x-ratelimit-reset-requests": "1m"},
        1.5,
    ),
    "retry-after wins over reset headers": (
        {"retry-after": "20", "x-ratelimit-reset-requests": "1m", "x-ratelimit-reset-tokens": "2m"},
        20.0,
    ),
    "retry-after as an http date": ({"retry-after": http_date(NOW + 45)}, 45.0),
    "the longer of the two reset headers": (
        {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "2m59.56s"},
        360.0,
    ),
    "the longer of the two reset headers (tokens longer)": (
        {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "1.2s"},
        1.2,
    ),
    "one reset header alone": ({"x-ratelimit-reset-tokens": "1.2s"}, 1.2),
    "an unreadable retry-after-ms falls through to retry-after": ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
    "an unreadable retry-after falls through to the reset headers": (
        {"retry-after": "later", "x-ratelimit-reset-requests": "10s"},
        10.0,
    ),
    "an unreadable reset header is ignored": (
        {"x-ratelimit-reset-requests": "??", "x-ratelimit-reset-tokens": "4s"},
        4.0,
    ),
    "no hint at all": ({"content-type": "application/json"}, None),
    "nothing readable": ({"retry-after": "later", "x-ratelimit-reset-tokens": "??"}, None),
    "zero is a real answer, not a missing one": ({"retry-after": "0", "x-ratelimit-reset-tokens": "9s"}, 0.0),
}


@pytest.mark.parametrize(("headers", "expected"), HEADERS.values(), ids=HEADERS.keys())
def test_the_wait_an_upstream_asked_for(headers: dict[str, str], expected: float | None) -> None:
    got = retry_after_from_headers(headers, NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)
