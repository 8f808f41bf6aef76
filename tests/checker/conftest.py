"""Fixtures of the checker tests: the fake upstream and an HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio

from checker.billing_upstream import BillingUpstream
from keyrelay.runtime.checker import Checker


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[BillingUpstream]:
    up = BillingUpstream()
    await up.start()
    try:
        yield up
    finally:
        await up.close()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with Checker.session() as s:
        yield s
