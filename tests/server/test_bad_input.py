"""Bad bytes from clients are 4xx, never a 5xx or a traceback; paths stay inside their pool; log
lines cannot be forged. Sent over raw sockets, since an HTTP client would refuse to send most
of this."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest

from keyrelay.logs import access_log, setup_logging
from keyrelay.testing.fake_upstream import Behavior

from .conftest import TOKEN

GOOD = "sk-good-0000000000000000000000000000AAAA"
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()
CHAT = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'

#: (name, raw bytes): each must get a 4xx (or a closed connection), never a 5xx
CORPUS: list[tuple[str, bytes]] = [
    ("garbage", b"GARBAGE\r\n\r\n"),
    ("binary", b"\x00\x01\x02\x03\xff\xfe\r\n\r\n"),
    ("pipelined garbage", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01 junk \x00\r\n\r\n"),
    ("invalid method", b"G@T /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("unknown method", b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n"),
    ("bad version", b"GET /v1/models HTTP/9.9\r\nHost: x\r\n\r\n"),
    ("http/0.9", b"GET /\r\n\r\n"),
    ("absolute form", b"GET http://169.254.169.254/latest HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n"),
    ("oversize header line", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n"),
    ("oversize request line", b"GET /v1/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("too many headers", b"GET /v1/models HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"\r\n"),
    ("header without colon", b"GET /v1/models HTTP/1.1\r\nHost x\r\n\r\n"),
    ("space before colon", b"GET /v1/models HTTP/1.1\r\nHost : x\r\n\r\n"),
    ("obs-fold", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n"),
    ("NUL in a header", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
    ("CL and TE", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH
     + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n"),
    ("two lengths", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH
     + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("huge length", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH
     + b"Content-Length: 99999999999999999999999\r\n\r\n"),
    ("negative length", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: -5\r\n\r\n"),
    ("bad chunk size", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH
     + b"Transfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n"),
    ("chunk size overflow", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH
     + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n"),
    ("chunk cut short", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH
     + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabc\r\n0\r\n\r\n"),
    ("unknown transfer coding", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH
     + b"Transfer-Encoding: xchunked\r\n\r\n"),
    ("invalid UTF-8 token", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfdkr\r\n\r\n"),
    ("control characters in the token", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer kr-\x01\x02\x7f\r\n\r\n"),
    ("invalid UTF-8 x-api-key", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-api-key: \xc3\x28\xa0\xa1\r\n\r\n"),
    ("invalid UTF-8 path", b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n"),
    ("percent invalid UTF-8 path", b"GET /v1/%ff%fe HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n"),
    ("CRLF in the path", b"GET /v1/%0d%0aforged HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n"),
    ("bad bytes in a forwarded header", b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + AUTH
     + b"User-Agent: \xff\xfe\x80\r\nX-Request-Id: \xc3\x28\r\n\r\n"),
    ("bad content type", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH
     + b"Content-Type: \xff/\x00\r\nContent-Length: 2\r\n\r\n{}"),
]

ESCAPES = [
    "/openai/../other/models",
    "/openai/%2e%2e/other/models",
    "/openai/%2E%2e/%2e%2E/models",
    "/openai/..%2fother/models",
    "/openai/%252e%252e/other/models",
    "/openai/v1/..%5c..%5cmodels",
    "/openai/v1/..\\..\\models",
    "/v1/../../models",
    "/v1/./models",
]


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, access_log._handler)
    out = io.StringIO()
    setup_logging("debug", out)
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


def _logged(out: io.StringIO) -> str:
    for h in logging.getLogger().handlers:
        h.flush()
    return out.getvalue()


@pytest.fixture
async def gw(make_gateway) -> AsyncIterator[object]:
    yield await make_gateway({GOOD: Behavior.OK}, server={"header_timeout": 2.0})


async def _exchange(url: str, raw: bytes, wait: float = 1.0) -> bytes:
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    got = b""
    try:
        writer.write(raw)
        await writer.drain()
        end = asyncio.get_running_loop().time() + wait
        while (left := end - asyncio.get_running_loop().time()) > 0:
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                break
            got += chunk
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    return got


def _statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


@pytest.mark.parametrize(("name", "raw"), CORPUS, ids=[n for n, _ in CORPUS])
async def test_malformed_requests_get_4xx_never_5xx_nor_a_traceback(gw, log_text, name, raw):
    got = await _exchange(gw.url, raw)
    statuses = _statuses(got)
    assert all(s < 500 for s in statuses), (name, got[:500])
    passes = ("pipelined garbage", "unknown method", "bad bytes in a forwarded header")  # a valid request in there
    assert statuses == [] or any(400 <= s < 500 for s in statuses) or name in passes, (name, got[:300])
    logged = _logged(log_text)
    assert "Traceback" not in logged and "level=error" not in logged, logged
    assert gw.fake.count(GOOD) == 0 or name in passes


async def test_bad_bytes_in_a_token_are_401(gw):
    for raw_token in (b"\xff\xfe\xfdkr", b"kr-\x01\x02", b"kr-test\x7f"):
        got = await _exchange(gw.url, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + raw_token + b"\r\n\r\n")
        assert _statuses(got)[:1] == [401], got[:300]
        assert b'"invalid_api_key"' in got


@pytest.mark.parametrize("path", ESCAPES)
async def test_paths_climbing_out_of_the_pool_get_400_and_never_reach_upstream(gw, path):
    got = await _exchange(gw.url, f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + AUTH + b"\r\n")
    assert _statuses(got)[:1] == [400], got[:300]
    assert b'"invalid_path"' in got and b'"invalid_request_error"' in got
    assert gw.fake.count(GOOD) == 0


async def test_ordinary_paths_with_dots_and_encoded_characters_still_pass(gw):
    for path in ("/openai/v1/models", "/v1/files/file-abc.jsonl/content", "/v1/models/gpt-4o%20mini"):
        got = await _exchange(gw.url, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode() + AUTH + b"\r\n")
        assert _statuses(got) and _statuses(got)[0] != 400, (path, got[:300])


async def test_crlf_in_the_path_does_not_forge_a_log_line(gw, log_text):
    forged = "/openai/x%0d%0ats=2030-01-01T00:00:00.000Z%20level=info%20logger=keyrelay.access%20pool=openai%20status=200"
    for token in ("nope", TOKEN):
        await _exchange(gw.url, f"GET {forged} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    await _exchange(gw.url, b"GET /nopool/a%0d%0aforged%22quote HTTP/1.1\r\nHost: x\r\n\r\n")
    logged = _logged(log_text)
    lines = logged.splitlines()
    assert not any(line.startswith("ts=2030") for line in lines)
    assert not any(line.startswith("forged") for line in lines)
    access = [line for line in lines if "logger=keyrelay.access" in line]
    assert len(access) == 3
    assert all("\r" not in line for line in access)
    assert any("\\x0d\\x0ats=2030" in line for line in access)


async def test_the_access_line_of_an_unauthenticated_request_cuts_a_long_path(gw, log_text):
    await _exchange(gw.url, b"GET /openai/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n")
    access = [line for line in _logged(log_text).splitlines() if "logger=keyrelay.access" in line]
    assert len(access) == 1 and "outcome=unauthorized" in access[0]
    path = re.search(r" path=(\S+) ", access[0])
    assert path is not None and len(path.group(1)) <= 201
