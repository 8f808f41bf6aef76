"""A fake OpenAI server (an in-process aiohttp app) whose behaviour is set per API key.

Used by the test suite, ``keyrelay demo`` and the benchmarks::

    async with FakeUpstream({"sk-good": Behavior.OK, "sk-spent": Behavior.QUOTA}) as up:
        ...  # point a client at up.url ("http://127.0.0.1:<port>/v1")
        assert up.count("sk-spent") == 1

Native APIs (Anthropic, Gemini, Azure) are mounted under their own prefixes by ``fake_native.py``
and its siblings. Error bodies are the real ones from ``PROVIDER-ERRORS.md`` §1. Every behaviour applies to every
endpoint. Checks run in this order: unknown key (401), the key-level refusals INVALID /
DEACTIVATED / REGION_BLOCKED, the request itself (invalid JSON 400, ``"model":
"no-such-model"`` 404, chat messages over 100,000 characters 400), then the other behaviours.
``STREAM_CUT`` drops the connection (after two chunks of a stream, at once otherwise);
``STREAM_ERROR`` answers a non-stream request with a 500. ``HANG`` answers 503 once
:meth:`FakeUpstream.close` is called. Usage is deterministic: ``prompt_tokens`` = 10 per message
(or input), ``completion_tokens`` = :data:`COMPLETION_TOKENS`.
"""

from __future__ import annotations

from keyrelay.testing.fake_anthropic import FakeAnthropic
from keyrelay.testing.fake_azure import FakeAzure
from keyrelay.testing.fake_gemini import FakeGemini
from keyrelay.testing.fake_openai import OpenAIEndpoints
from keyrelay.testing.fake_server import Served
from keyrelay.testing.key_specs import Behavior, Call, KeySpec, go_duration
from keyrelay.testing.openai_bodies import COMPLETION_TOKENS, SPEECH_BYTES

__all__ = ["COMPLETION_TOKENS", "SPEECH_BYTES", "Behavior", "Call", "FakeUpstream", "KeySpec", "Served", "go_duration"]


class FakeUpstream(OpenAIEndpoints):
    """A fake OpenAI API. ``keys`` maps bearer keys to behaviours; others get ``default``
    (``None``: a 401 ``invalid_api_key``). ``calls`` records every request received
    (``record_calls=False`` turns that off for long benchmarks); ``served`` counts, per key, the
    answers given whole and the tokens their usage objects reported."""

    def install(self) -> None:
        add = self.app.router.add_route
        add("POST", "/v1/chat/completions", self._route(self._chat, "json"))
        add("POST", "/v1/completions", self._route(self._completion, "json"))
        add("POST", "/v1/embeddings", self._route(self._embeddings, "json"))
        add("POST", "/v1/responses", self._route(self._responses, "json"))
        add("GET", "/v1/models", self._route(self._models, ""))
        add("GET", "/v1/models/{model}", self._route(self._model, ""))
        add("POST", "/v1/audio/transcriptions", self._route(self._transcription, "multipart"))
        add("POST", "/v1/audio/speech", self._route(self._speech, "json"))
        add("POST", "/v1/files", self._route(self._file_upload, "multipart"))
        add("DELETE", "/v1/files/{file_id}", self._route(self._file_delete, ""))
        add("GET", "/v1/files/{file_id}/content", self._route(self._file_content, ""))
        for api in (FakeAnthropic, FakeGemini, FakeAzure):  # native APIs under /anthropic, /gemini, /azure
            api(self).install()
