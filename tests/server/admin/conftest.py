"""An admin API client on a running gateway (tests/server/conftest.py) with an admin token."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from keyrelay.stores.base import hash_token
from keyrelay.testing.fake_upstream import Behavior, KeySpec

from ..conftest import TOKEN, Gateway

ADMIN = "kr-admin-test-token-0123456789abcdef"
API = "/admin/api/v1"


class Admin:
    """Calls the admin API of ``gw`` with an admin token (or ``token=None`` / another one)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.answers: list[bytes] = []  # every body the API returned (to grep for secrets)

    async def call(self, method: str, path: str, token: str | None = ADMIN, **kw: Any) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.gw.session.request(method, self.gw.url + API + path, headers=headers, **kw) as resp:
            raw = await resp.read()
            self.answers.append(raw)
            self.answers.append(str(resp.headers).encode())
            if resp.content_type == "application/json" and raw:
                import json

                return resp.status, json.loads(raw)
            return resp.status, raw

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, **kw)


REDIS_URL = os.environ.get("KEYRELAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A Redis store URL with a fresh prefix, every key under it deleted afterwards. Skips when
    no Redis answers (fails under CI=true, like tests/stores/conftest.py)."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=1.0)
    prefix = f"krtest-admin-{uuid.uuid4().hex[:12]}"
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true but no Redis answers at {REDIS_URL}: {exc}")
            pytest.skip(f"no Redis at {REDIS_URL} (start one, or set KEYRELAY_TEST_REDIS)")
        yield f"{REDIS_URL}?prefix={prefix}"
        batch = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(batch), 1000):
            await client.delete(*batch[i:i + 1000])
    finally:
        await client.aclose()


@pytest.fixture
async def make_admin(make_gateway: Any) -> Any:
    async def make(keys: Mapping[str, Behavior | KeySpec] | None = None, **kw: Any) -> Admin:
        gw = await make_gateway(dict(keys or {"sk-admin-fixture-key-000000000001": Behavior.OK}), **kw)
        await gw.store.create_token("ops", [], hash_token(ADMIN), time.time(), admin=True)
        return Admin(gw)

    return make


__all__ = ["ADMIN", "API", "TOKEN", "Admin"]
