"""What every provider dialect offers: authentication for a key, classification of answers,
usage extraction and rebuilt (redacted) error bodies. Dialects are pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from keyrelay.core.model import Verdict

__all__ = ["Dialect", "Rule", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of a classification table.

    A rule matches when every given field matches: ``statuses`` (empty = any), ``codes``
    (the error's ``code``), ``types`` (the error's ``type``), ``message`` (a lower-case
    substring of the message). ``any_of_code_or_type`` matches when either the code or the type
    is in ``codes``. Rows are tried in order; the first match decides.
    """

    outcome: str
    reason: str
    statuses: frozenset[int] = frozenset()
    codes: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    message: tuple[str, ...] = ()
    code_suffix: tuple[str, ...] = ()


class Dialect(Protocol):
    """A provider's way of speaking."""

    name: str
    #: request headers that carry credentials in this dialect (removed from client requests)
    auth_header_names: frozenset[str]

    def auth_headers(self, secret: str) -> dict[str, str]:
        """Headers that present ``secret`` upstream."""
        ...

    def classify(self, status: int, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
        """Classify a complete (non-streamed, or error) answer."""
        ...

    def classify_event(self, data: bytes) -> Verdict | None:
        """Classify one SSE ``data:`` payload; ``None`` when it is an ordinary event."""
        ...

    def usage(self, payload: Mapping[str, Any]) -> Usage | None:
        """Token usage from a decoded JSON answer or SSE event, if it has any."""
        ...

    def usage_at(self, data: bytes, at: int) -> Usage | None:
        """Token usage read straight off the raw bytes, where ``"usage"`` starts at ``at``, when
        they are in the provider's usual spelling; ``None`` means "decode to find out". Saves
        decoding a JSON document on every answer (the hot path)."""
        ...

    def error_body(self, status: int, body: bytes, secrets: tuple[str, ...] = ()) -> bytes:
        """An error body safe to hand to a client: rebuilt from the upstream one, keys redacted."""
        ...
