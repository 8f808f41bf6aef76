"""keyrelay's version, in a module of its own so any layer may name it without importing the
package root (which sits above every layer). ``keyrelay.__version__`` is the same string."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"  # pyproject.toml's [project] version; keep the two equal
