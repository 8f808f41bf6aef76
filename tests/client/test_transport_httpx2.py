"""The key-rotating transport over httpx2 (the HTTP library of openai ≥ 3)."""

from __future__ import annotations

import httpx2

import keyrelay

from .transport_contract import TransportContract


class TestHttpx2Transport(TransportContract):
    http = httpx2
    client = staticmethod(keyrelay.httpx_client)
    aclient = staticmethod(keyrelay.async_httpx_client)

    def test_the_factories_return_httpx2_clients(self, make_pool) -> None:  # type: ignore[no-untyped-def]
        pool = make_pool(["sk-one-000000000000000000000001"])
        with keyrelay.httpx_client(pool) as c:
            assert isinstance(c, httpx2.Client)
        assert isinstance(keyrelay.async_httpx_client(pool), httpx2.AsyncClient)
