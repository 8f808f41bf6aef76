"""No core dumps: a gateway's memory holds every key of its pools in plaintext (decrypted at
load), and a core file would write them to disk. ``keyrelay serve`` calls
:func:`disable_core_dumps` before it starts; worker processes inherit the limit."""

from __future__ import annotations

import logging

__all__ = ["disable_core_dumps"]

log = logging.getLogger("keyrelay")


def disable_core_dumps() -> bool:
    """Set RLIMIT_CORE to 0 (soft and hard, so the process cannot raise it again). False, with a
    warning, where the platform does not allow it."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows has no core dumps to disable
        return False
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:  # pragma: no cover - a sandbox refusing setrlimit
        log.warning("could not disable core dumps (%s): a crash could write the keys in memory to disk", exc)
        return False
    return True
