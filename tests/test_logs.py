"""Log lines: one access line per request with the masked key only, and the logfmt shape."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator

import pytest

from keyrelay.core.pool import Lease
from keyrelay.logs import access_log, setup_logging

SECRET = "sk-proj-T3stSecretValue0123456789AbCd"
LEASE = Lease("k_0001", "openai", SECRET, 3, "sk-…AbCd")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, access_log._handler)
    out = io.StringIO()
    setup_logging("info", out)
    try:
        yield out
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        access_log._handler = saved[2]


def test_an_access_line_carries_the_request_and_only_the_masked_key(captured: io.StringIO) -> None:
    access_log.request("openai", LEASE, "POST", "/v1/chat/completions", 200, "ok", 2, time.perf_counter() - 0.0123, "ci")
    access_log.request("openai", None, "GET", "/v1/models", 503, "no_key", 0, time.perf_counter(), "ci")
    logging.getLogger().handlers[0].flush()
    first, second = captured.getvalue().splitlines()
    assert re.fullmatch(
        r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info logger=keyrelay\.access pool=openai key=k_0001 "
        r"masked=sk-…AbCd method=POST path=/v1/chat/completions status=200 outcome=ok attempts=2 ms=1\d\.\d client=ci",
        first,
    )
    assert "key=- masked=- method=GET path=/v1/models status=503 outcome=no_key attempts=0" in second
    assert SECRET not in captured.getvalue()


def test_without_the_gateway_logging_lines_go_through_the_logger(caplog: pytest.LogCaptureFixture) -> None:
    saved, access_log._handler = access_log._handler, None
    try:
        with caplog.at_level(logging.INFO, logger="keyrelay.access"):
            access_log.request("openai", LEASE, "POST", "/v1/embeddings", 200, "ok", 1, time.perf_counter(), "lib")
    finally:
        access_log._handler = saved
    (record,) = [r for r in caplog.records if r.name == "keyrelay.access"]
    assert "key=k_0001 masked=sk-…AbCd method=POST path=/v1/embeddings status=200" in record.getMessage()
    assert SECRET not in record.getMessage()
