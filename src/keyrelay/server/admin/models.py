"""The admin API's request and response shapes (``msgspec`` structs): one declaration from which
both the validation of what comes in and the OpenAPI document (:mod:`.openapi`) are built.

``msgspec`` rather than pydantic: one small compiled dependency that decodes and validates JSON
(and converts query strings) straight into these structs and emits their JSON Schema (2020-12,
what OpenAPI 3.1 uses); it stays off the proxy's hot path entirely.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

__all__ = [
    "STATES",
    "AddKeysIn",
    "AddKeysOut",
    "Added",
    "Bucket",
    "BulkIn",
    "BulkOut",
    "BulkResult",
    "CheckIn",
    "CheckOut",
    "CheckRowOut",
    "Error",
    "ErrorReply",
    "EventOut",
    "EventPage",
    "EventsQuery",
    "ImportIn",
    "Key",
    "KeyCounters",
    "KeyEventsQuery",
    "KeyPage",
    "KeysQuery",
    "Pool",
    "PoolList",
    "Refused",
    "SessionIn",
    "SessionOut",
    "StateCounts",
    "TokenCreated",
    "TokenIn",
    "TokenList",
    "TokenOut",
    "UsageOut",
    "UsageQuery",
    "given",
]

_T = TypeVar("_T")

STATES = ("active", "cooling", "exhausted", "invalid", "disabled")
State = Literal["active", "cooling", "exhausted", "invalid", "disabled"]
#: epoch seconds, finite (a NaN or infinity is refused)
Time = Annotated[float, Meta(ge=0, le=1e11)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
#: a key as it may be stored: printable ASCII without spaces (core.masking.validate_secret)
Secret = Annotated[str, Meta(min_length=1, max_length=512, pattern=r"^[!-~]+$")]
Limit = Annotated[int, Meta(ge=1, le=500)]
Cursor = Annotated[str, Meta(max_length=500)]


def given(value: _T | UnsetType) -> _T | None:
    """A query parameter's value, ``None`` when it was not given. (Query fields default to
    ``UNSET`` rather than ``None``: converting a query string, msgspec would read ``null`` as None.)"""
    return None if value is UNSET else value


class Error(Struct):
    message: str
    type: str
    code: str


class ErrorReply(Struct):
    """Every error of the admin API."""

    error: Error


# -- session --------------------------------------------------------------------------------------


class SessionIn(Struct, forbid_unknown_fields=True):
    token: Annotated[str, Meta(min_length=1, max_length=500)]


class SessionOut(Struct):
    name: str
    csrf: str


# -- pools and keys -------------------------------------------------------------------------------


class StateCounts(Struct):
    active: int
    cooling: int
    exhausted: int
    invalid: int
    disabled: int


class Pool(Struct):
    name: str
    provider: str
    base_url: str
    total: int
    eligible: int
    states: StateCounts


class PoolList(Struct):
    data: list[Pool]


class KeyCounters(Struct):
    requests: int
    failures: int
    prompt_tokens: int
    completion_tokens: int
    successes: int


class Key(Struct):
    """A key as the admin API shows it: masked, with its effective state. Never the secret."""

    id: str
    pool: str
    masked: str
    state: State
    reason: str
    since: float
    until: float | None
    label: str
    weight: float
    balance: float | None
    base_url: str | None
    counters: KeyCounters
    stored_state: State
    currency: str
    added_at: float
    version: int


class KeyPage(Struct):
    data: list[Key]
    next_cursor: str | None
    total: int


class KeysQuery(Struct, forbid_unknown_fields=False):
    pool: Name | UnsetType = UNSET
    state: Annotated[State, Meta(description="the effective state (a cooling key past its end is active)")] | UnsetType = UNSET
    reason: Annotated[str, Meta(max_length=200, description="part of the reason, any case")] | UnsetType = UNSET
    q: Annotated[
        str, Meta(max_length=200, description="an id prefix, the masked form, or the masked tail (up to 4 characters)")
    ] | UnsetType = UNSET
    sort: Literal["id", "state", "since", "requests", "failures"] = "id"
    order: Literal["asc", "desc"] = "asc"
    limit: Limit = 50
    cursor: Cursor | UnsetType = UNSET


class AddKeysIn(Struct, forbid_unknown_fields=True):
    pool: Name
    keys: Annotated[list[Secret], Meta(min_length=1, max_length=10_000)]
    label: Annotated[str, Meta(max_length=200)] = ""


class ImportIn(Struct, forbid_unknown_fields=True):
    pool: Name
    text: Annotated[str, Meta(max_length=16 * 1024 * 1024)]
    label: Annotated[str, Meta(max_length=200)] = ""


class Added(Struct):
    id: str
    masked: str


class Refused(Struct):
    line: int
    why: str


class AddKeysOut(Struct):
    added: list[Added]
    duplicates: list[str]
    refused: list[Refused] = []


class BulkIn(Struct, forbid_unknown_fields=True):
    action: Literal["disable", "enable", "recheck", "remove"]
    ids: Annotated[list[Annotated[str, Meta(max_length=200)]], Meta(min_length=1, max_length=10_000)]


class BulkResult(Struct, omit_defaults=True):
    id: str
    ok: bool
    error: str | None = None


class BulkOut(Struct):
    results: list[BulkResult]


# -- tokens ---------------------------------------------------------------------------------------


class TokenOut(Struct):
    id: str
    name: str
    pools: list[str]
    admin: bool
    created_at: float
    revoked_at: float | None


class TokenList(Struct):
    data: list[TokenOut]


class TokenIn(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
    pools: Annotated[list[Name], Meta(max_length=100)] = []
    admin: bool = False


class TokenCreated(Struct):
    id: str
    name: str
    token: str


# -- events ---------------------------------------------------------------------------------------


class EventOut(Struct):
    id: int
    key_id: str
    pool: str
    at: float
    from_: str = msgspec.field(name="from")
    to: str = ""
    reason: str = ""
    detail: str = ""
    actor: str = ""


class EventPage(Struct):
    data: list[EventOut]
    next_cursor: str | None


class EventsQuery(Struct):
    pool: Name | UnsetType = UNSET
    key: Name | UnsetType = UNSET
    since: Time | UnsetType = UNSET
    until: Time | UnsetType = UNSET
    limit: Limit = 100
    cursor: Cursor | UnsetType = UNSET


class KeyEventsQuery(Struct):
    limit: Limit = 100
    cursor: Cursor | UnsetType = UNSET


# -- check and usage ------------------------------------------------------------------------------


class CheckIn(Struct, forbid_unknown_fields=True):
    pool: Name | None = None
    dry_run: bool = False


class CheckRowOut(Struct):
    id: str
    pool: str
    before: State
    after: State
    detail: str
    masked: str
    changed: bool


class CheckOut(Struct):
    results: list[CheckRowOut]
    dry_run: bool


class UsageQuery(Struct):
    pool: Name | UnsetType = UNSET
    key: Name | UnsetType = UNSET
    resolution: Literal["minute", "hour"] = "minute"
    since: Time | UnsetType = UNSET
    until: Time | UnsetType = UNSET


class Bucket(Struct):
    t: float
    requests: int
    outcomes: dict[str, int]
    prompt_tokens: int
    completion_tokens: int


class UsageOut(Struct):
    resolution: Literal["minute", "hour"]
    buckets: list[Bucket]
