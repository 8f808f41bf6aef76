"""keyrelay — one endpoint, many keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keyrelay.core.model import KeyRecord, KeyState, Outcome, Verdict
from keyrelay.version import __version__

if TYPE_CHECKING:
    from keyrelay.client import (
        KeyLease,
        Pool,
        async_httpx_client,
        httpx_client,
        legacy_async_httpx_client,
        legacy_httpx_client,
    )
    from keyrelay.core.policy import CoolingPolicy, RetryPolicy
    from keyrelay.exceptions import NoKeyAvailable

# Library mode's names (Pool, KeyLease, NoKeyAvailable, the *_httpx_client factories and the
# policies they take) load on first use.
__all__ = [
    "CoolingPolicy",
    "KeyLease",
    "KeyRecord",
    "KeyState",
    "NoKeyAvailable",
    "Outcome",
    "Pool",
    "RetryPolicy",
    "Verdict",
    "__version__",
    "async_httpx_client",
    "httpx_client",
    "legacy_async_httpx_client",
    "legacy_httpx_client",
]


_LAZY = {
    "Pool": "keyrelay.client",
    "KeyLease": "keyrelay.client",
    "httpx_client": "keyrelay.client",
    "async_httpx_client": "keyrelay.client",
    "legacy_httpx_client": "keyrelay.client",
    "legacy_async_httpx_client": "keyrelay.client",
    "NoKeyAvailable": "keyrelay.runtime.attempts",
    "RetryPolicy": "keyrelay.core.policy",
    "CoolingPolicy": "keyrelay.core.policy",
}


def __getattr__(name: str) -> Any:
    """Library mode's names load on first use, so ``import keyrelay`` stays light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keyrelay' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
