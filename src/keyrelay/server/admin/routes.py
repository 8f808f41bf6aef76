"""Every route of the admin API, declared once (see :class:`.routing.Route`)."""

from __future__ import annotations

from keyrelay.server.admin import keys as k
from keyrelay.server.admin import resources as r
from keyrelay.server.admin.models import (
    AddKeysIn,
    AddKeysOut,
    BulkIn,
    BulkOut,
    CheckIn,
    CheckOut,
    EventPage,
    EventsQuery,
    ImportIn,
    Key,
    KeyEventsQuery,
    KeyPage,
    KeysQuery,
    PoolList,
    SessionIn,
    SessionOut,
    TokenCreated,
    TokenIn,
    TokenList,
    UsageOut,
    UsageQuery,
)
from keyrelay.server.admin.routing import Route

__all__ = ["ROUTES"]

ROUTES: tuple[Route, ...] = (
    Route("POST", "/session", r.sign_in, "Sign in with an admin token: sets the session cookie, returns the CSRF value",
          "session", response=SessionOut, body=SessionIn, public=True),
    Route("GET", "/session", r.session_get, "Who is signed in (and the CSRF value of the session)", "session",
          response=SessionOut),
    Route("DELETE", "/session", r.sign_out, "Sign out: clears the session cookie", "session", ok=204, public=True),
    Route("GET", "/pools", r.list_pools, "Pools with their keys counted by state", "pools", response=PoolList),
    Route("GET", "/keys", k.list_keys, "Keys: filter, search (id prefix or masked tail), sort, page by cursor", "keys",
          response=KeyPage, query=KeysQuery, errors=(404,)),
    Route("POST", "/keys", k.add_keys, "Add keys to a pool (answers ids and masked forms only)", "keys", ok=201,
          response=AddKeysOut, body=AddKeysIn, errors=(404,)),
    Route("POST", "/keys/import", k.import_keys, "Import keys from text: one per line, '#' comments", "keys", ok=201,
          response=AddKeysOut, body=ImportIn, errors=(404,)),
    Route("POST", "/keys/bulk", k.bulk, "Disable, enable, recheck or remove many keys", "keys", response=BulkOut,
          body=BulkIn),
    Route("GET", "/keys/{id}", k.get_key, "One key (masked)", "keys", response=Key, errors=(404,)),
    Route("DELETE", "/keys/{id}", k.remove_key, "Remove a key for good (its history stays)", "keys", ok=204,
          errors=(404,)),
    Route("GET", "/keys/{id}/events", r.key_events, "A key's events, newest first", "keys", response=EventPage,
          query=KeyEventsQuery),
    Route("POST", "/keys/{id}/disable", k.disable_key, "Take a key out of rotation", "keys", response=Key,
          errors=(404, 409)),
    Route("POST", "/keys/{id}/enable", k.enable_key, "Put a key back into rotation", "keys", response=Key,
          errors=(404, 409)),
    Route("POST", "/keys/{id}/recheck", k.recheck_key, "Probe a key now and apply what the answer says", "keys",
          response=Key, errors=(404, 409)),
    Route("GET", "/tokens", r.list_tokens, "Client and admin tokens (never the token or its hash)", "tokens",
          response=TokenList),
    Route("POST", "/tokens", r.create_token, "Create a token: shown once in the answer", "tokens", ok=201,
          response=TokenCreated, body=TokenIn, errors=(404, 409)),
    Route("DELETE", "/tokens/{id}", r.revoke_token, "Revoke a token", "tokens", ok=204, errors=(404,)),
    Route("GET", "/events", r.events, "Events by pool, key and time, newest first", "events", response=EventPage,
          query=EventsQuery, errors=(404,)),
    Route("GET", "/events/stream", r.events_stream,
          "Live feed (server-sent events): 'event: transition' per event, ': ping' every 15 s", "events",
          media="text/event-stream"),
    Route("POST", "/check", r.check, "Run a sweep of the key checker now (or a dry run)", "check", response=CheckOut,
          body=CheckIn, errors=(404, 409)),
    Route("GET", "/usage", r.usage, "Requests, outcomes and tokens over time, per pool or key", "usage",
          response=UsageOut, query=UsageQuery, errors=(404,)),
)
