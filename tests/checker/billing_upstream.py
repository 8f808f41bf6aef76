"""A fake upstream that answers the checker's probes per key: the one-api style billing
endpoints, ``/v1/models``, the four provider balance endpoints and a chat completion.

Every key is an :class:`Account`; an unknown key gets 401 everywhere. ``down`` makes every
endpoint answer 503. Run it in the test's loop (``await up.start()``) or, for click commands
that run their own loop, in a thread (``with up.in_thread(): …``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web

_INVALID = {"error": {"message": "Incorrect API key provided: sk-…abcd.", "type": "invalid_request_error",
                      "param": None, "code": "invalid_api_key"}}


@dataclass
class Account:
    """What the upstream knows of one key."""

    hard_limit_usd: float = 100.0
    access_until: float = 0.0  # 0 = never expires (one-api / new-api)
    total_usage_cents: float = 0.0
    #: "ok" | "error200" (HTTP 200 with an error object) | "missing" (404) | "lmstudio" (200, not billing)
    billing: str = "ok"
    valid: bool = True  # False: 401 on every endpoint
    balance: float = 10.0  # for the provider balance endpoints
    limit_reset: str | None = "daily"  # OpenRouter
    expires_at: str | None = None  # OpenRouter, ISO 8601
    quota_exhausted: bool = False  # chat completions answer 429 insufficient_quota


ACCOUNT = web.RequestKey("account", Account)


@dataclass
class BillingUpstream:
    accounts: dict[str, Account] = field(default_factory=dict)
    down: bool = False
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, key)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    # -- running -----------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/v1/dashboard/billing/subscription", self.subscription)
        r.add_get("/v1/dashboard/billing/usage", self.usage)
        r.add_get("/v1/models", self.models)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_get("/user/balance", self.deepseek)
        r.add_get("/v1/key", self.openrouter)
        r.add_get("/v1/user/info", self.siliconflow)
        r.add_get("/v1/users/me/balance", self.moonshot)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[str]:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        base = asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
        try:
            yield base
        finally:
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    # -- plumbing ----------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: web.Handler) -> web.StreamResponse:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.requests.append((request.path, key))
        if self.down:
            return web.json_response({"error": {"message": "The server is overloaded", "type": "server_error"}},
                                     status=503)
        acct = self.accounts.get(key)
        if acct is None or not acct.valid:
            return web.json_response(_INVALID, status=401)
        request[ACCOUNT] = acct
        return await handler(request)

    @staticmethod
    def _acct(request: web.Request) -> Account:
        return request[ACCOUNT]

    def probed(self, key: str) -> int:
        return sum(k == key for _, k in self.requests)

    # -- billing (one-api / new-api shapes) -------------------------------------------------------
    async def subscription(self, request: web.Request) -> web.StreamResponse:
        a = self._acct(request)
        if a.billing == "missing":
            return web.Response(status=404, text="404 page not found")
        if a.billing == "error200":
            return web.json_response({"error": {"message": "record not found", "type": "upstream_error"}})
        if a.billing == "lmstudio":
            return web.json_response({"error": "Unexpected endpoint or method. (GET /v1/dashboard/billing/subscription)"})
        return web.json_response({
            "object": "billing_subscription", "has_payment_method": True, "soft_limit_usd": a.hard_limit_usd,
            "hard_limit_usd": a.hard_limit_usd, "system_hard_limit_usd": a.hard_limit_usd,
            "access_until": a.access_until,
        })

    async def usage(self, request: web.Request) -> web.StreamResponse:
        a = self._acct(request)
        if "start_date" not in request.query or "end_date" not in request.query:
            return web.json_response({"error": {"message": "missing dates", "type": "invalid_request_error"}},
                                     status=400)
        if a.billing == "error200":
            return web.json_response({"error": {"message": "record not found", "type": "new_api_error"}})
        return web.json_response({"object": "list", "total_usage": a.total_usage_cents})

    # -- validity and completions ---------------------------------------------------------------
    async def models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if self._acct(request).quota_exhausted:
            return web.json_response({"error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}, status=429)
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
        })

    # -- provider balances ----------------------------------------------------------------------
    async def deepseek(self, request: web.Request) -> web.StreamResponse:
        b = self._acct(request).balance
        return web.json_response({"is_available": b > 0, "balance_infos": [
            {"currency": "CNY", "total_balance": f"{b:.2f}", "granted_balance": "0.00", "topped_up_balance": f"{b:.2f}"}
        ]})

    async def openrouter(self, request: web.Request) -> web.StreamResponse:
        a = self._acct(request)
        return web.json_response({"data": {
            "label": "sk-or-v1-…", "limit": 20, "limit_remaining": a.balance, "limit_reset": a.limit_reset,
            "usage": 20 - a.balance, "is_free_tier": False, "expires_at": a.expires_at,
        }})

    async def siliconflow(self, request: web.Request) -> web.StreamResponse:
        b = self._acct(request).balance
        return web.json_response({"code": 20000, "message": "OK", "status": True, "data": {
            "id": "u1", "balance": "0.00", "chargeBalance": f"{b:.2f}", "totalBalance": f"{b:.2f}"}})

    async def moonshot(self, request: web.Request) -> web.StreamResponse:
        b = self._acct(request).balance
        return web.json_response({"code": 0, "scode": "0x0", "status": True, "data": {
            "available_balance": b, "voucher_balance": 0, "cash_balance": b}})
