"""The ``keyrelay`` command line: keys, client tokens, history and the gateway itself."""

from __future__ import annotations

__all__: list[str] = []
