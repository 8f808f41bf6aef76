"""keyrelay — one endpoint, many keys."""

from __future__ import annotations

from keyrelay.core.model import KeyRecord, KeyState, Outcome, Verdict

__all__ = ["KeyRecord", "KeyState", "Outcome", "Verdict", "__version__"]

__version__ = "0.1.0"
