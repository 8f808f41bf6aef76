"""Where an upstream request goes (an origin: TLS or not, through a proxy or not), the request's
bytes, and the reading of a proxy's answer to CONNECT."""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
from collections.abc import Iterable, Mapping

from keyrelay.http1.errors import ProxyError

__all__ = ["HeaderInput", "Origin", "Tunnel", "serialize"]

HeaderInput = Mapping[str, str] | Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]
_OURS = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive"))
_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))


class Origin:
    """Where requests for one ``scheme://host:port`` go, and how."""

    __slots__ = ("absolute", "host", "host_header", "key", "port", "proxy", "proxy_auth", "tls")

    def __init__(self, scheme: str, netloc: str, proxies: dict[str, str]) -> None:
        self.tls = scheme == "https"
        host, _, port = netloc.rpartition(":") if netloc.rfind(":") > netloc.rfind("]") else (netloc, "", "")
        self.host = host.strip("[]")
        self.port = int(port) if port else (443 if self.tls else 80)
        self.host_header = netloc.encode("idna")
        self.proxy: tuple[str, int] | None = None
        self.proxy_auth = b""
        proxy = proxies.get(scheme)
        if proxy and not _bypass(self.host, proxies.get("no", "")):
            p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
            if p.scheme != "http":
                raise ValueError(f"unsupported proxy scheme {p.scheme!r} (http:// proxies only)")
            self.proxy = (p.hostname or "", p.port or 80)
            if p.username is not None:
                cred = f"{urllib.parse.unquote(p.username)}:{urllib.parse.unquote(p.password or '')}"
                self.proxy_auth = b"Proxy-Authorization: Basic " + base64.b64encode(cred.encode()) + b"\r\n"
        self.absolute = self.proxy is not None and not self.tls  # http through a proxy: absolute-form targets
        self.key = f"{scheme}://{netloc}"


def _bypass(host: str, no_proxy: str) -> bool:
    """Does ``NO_PROXY`` (comma-separated hosts or domain suffixes; ``*`` for all) cover ``host``?"""
    host = host.lower()
    for entry in no_proxy.replace(" ", "").lower().split(","):
        entry = entry.lstrip(".").rsplit(":", 1)[0] if entry.count(":") == 1 else entry.strip("[]")
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return True
    return False


class Tunnel(asyncio.Protocol):
    """Reads a proxy's answer to CONNECT (its status)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answered: asyncio.Future[int] = loop.create_future()
        self._buf = b""

    def data_received(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end >= 0 and not self.answered.done():
            parts = self._buf.split(b" ", 2)
            ok = len(parts) > 1 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit()
            self.answered.set_result(int(parts[1]) if ok else 0)
        elif len(self._buf) > 65536 and not self.answered.done():
            self.answered.set_result(0)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_exception(ProxyError("the proxy closed the connection before answering CONNECT"))


_NAMES: dict[bytes, bool] = {}  #: header name → is it the caller's to send (not framing, not Host)?


def _check_name(name: bytes) -> bool:
    if not name or any(c in name for c in (b"\n", b"\r", b":", b" ")):
        raise ValueError(f"not a header name: {name[:40]!r}")
    forward = name.lower() not in _OURS
    if len(_NAMES) < 4096:
        _NAMES[name] = forward
    return forward


_STR_NAMES: dict[str, bytes] = {}  #: a header name given as str → its bytes (b"": not the caller's to send)


def _str_name(name: str) -> bytes:
    raw = name.encode("latin-1")
    out = raw if _check_name(raw) else b""
    if len(_STR_NAMES) < 4096:
        _STR_NAMES[name] = out
    return out


def serialize(method: bytes, target: bytes, origin: Origin, headers: HeaderInput, body: bytes,
              more: HeaderInput = ()) -> bytes:
    """The request's bytes: our Host and Content-Length, the caller's other headers (no CR/LF):
    ``headers``, then ``more``."""
    # pieces joined once at the end (``%`` formatting costs more than the join of its parts)
    lines = [method, b" ", target, b" HTTP/1.1\r\nHost: ", origin.host_header, b"\r\n"]
    for group in (headers, more):
        pairs: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]]
        pairs = group.items() if isinstance(group, (dict, Mapping)) else group
        for n, v in pairs:
            if isinstance(n, str):
                name = _STR_NAMES.get(n)
                if name is None:
                    name = _str_name(n)
                value = v.encode("latin-1") if isinstance(v, str) else v
            else:
                forward = _NAMES.get(n)
                if forward is None:
                    forward = _check_name(n)
                name = n if forward else b""
                value = v
            if not name:
                continue
            if 10 in value or 13 in value:  # LF, CR (an int looks up with memchr: ~3x quicker than b"\n")
                raise ValueError(f"a line break in the value of {name[:40]!r}")
            lines += (name, b": ", value, b"\r\n")
    if origin.absolute:
        lines.append(origin.proxy_auth)
    if body or method in _BODY_METHODS:
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)
