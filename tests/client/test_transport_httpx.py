"""The key-rotating transport over httpx (the HTTP library of openai 1.x / 2.x)."""

from __future__ import annotations

import pytest

import keyrelay

from .transport_contract import TransportContract

httpx = pytest.importorskip("httpx")


class TestHttpxTransport(TransportContract):
    http = httpx
    client = staticmethod(keyrelay.legacy_httpx_client)
    aclient = staticmethod(keyrelay.legacy_async_httpx_client)

    def test_the_factories_return_httpx_clients(self, make_pool) -> None:  # type: ignore[no-untyped-def]
        pool = make_pool(["sk-one-000000000000000000000001"])
        with keyrelay.legacy_httpx_client(pool) as c:
            assert isinstance(c, httpx.Client)
        assert isinstance(keyrelay.legacy_async_httpx_client(pool), httpx.AsyncClient)
