"""The fake upstream's Azure OpenAI API, under ``/azure``: ``/openai/deployments/{deployment}/…
?api-version=…`` and the v1 API ``/openai/v1/…``, ``api-key`` auth, Azure's error bodies (their
``code`` a string) from PROVIDER-ERRORS.md §2. Answers are the OpenAI fake's own."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from keyrelay.testing.fake_native import Answer, NativeApi

__all__ = ["FakeAzure"]

_INVALID = (
    b'{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure '
    b'to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}'
)
_LIMIT = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token "
    "rate limit of your current OpenAI S0 pricing tier. Please retry after {} seconds. Please go here: "
    "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
)
_PEAK = (  # pollinations/pollinations#6260: shared capacity, not the key
    "The system is currently experiencing high demand and cannot process your request. Your request exceeds the "
    "maximum usage size allowed during peak load. Please retry after 20 seconds. For improved latency reliability, "
    "consider switching to Provisioned Throughput."
)


def _error(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


class FakeAzure(NativeApi):
    prefix = "/azure"

    def install(self) -> None:
        fake = self.fake
        for base in ("/openai/deployments/{deployment}", "/openai/v1"):
            self.add("POST", base + "/chat/completions", fake._chat)
            self.add("POST", base + "/embeddings", fake._embeddings)
        self.add("GET", "/openai/models", fake._models)
        self.add("GET", "/openai/v1/models", fake._models)

    def key_of(self, request: web.Request) -> str | None:
        return request.headers.get("api-key")

    def invalid(self, key: str | None) -> Answer:
        return 401, _INVALID, {}

    def spent(self) -> Answer:
        return 429, _error("429", _LIMIT.format(86400)), {"retry-after": "86400"}

    def rate_limited(self, wait: float) -> Answer:
        secs = max(1, round(wait))
        return 429, _error("429", _LIMIT.format(secs)), {"retry-after": str(secs)}

    def overloaded(self) -> Answer:
        return 429, _error("429", _PEAK), {"retry-after": "20"}

    def server_error(self) -> Answer:
        return 500, _error("InternalServerError", "The server had an error while processing your request."), {}

    def bad_request(self, message: str) -> Answer:
        return 400, _error("BadRequest", message), {}

    def check(self, request: web.Request, payload: dict[str, Any]) -> Answer | None:
        if "deployment" in request.match_info and "api-version" not in request.query:
            return 404, _error("404", "Resource not found"), {}
        if request.headers.get("authorization"):
            return 401, _INVALID, {}  # a client credential leaked through
        if request.match_info.get("deployment") == "no-such-model":
            message = "The API deployment for this resource does not exist."
            return 404, _error("DeploymentNotFound", message), {}
        return None
