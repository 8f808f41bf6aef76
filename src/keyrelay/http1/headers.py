"""A small read-only, case-insensitive view of raw HTTP header lines, decoded on first use.

Built from the ``(name, value)`` byte pairs the parser hands over; nothing is decoded or
lower-cased until a caller looks (most answers on the hot path are looked at for two or three
names). Values are latin-1 (RFC 9110: header bytes beyond ASCII are opaque). Repeated names
keep every value: :meth:`get` gives the first, :meth:`getall` all of them, :meth:`items` every
line in order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ["Headers", "RawHeaders"]

RawHeaders = list[tuple[bytes, bytes]]


class Headers(Mapping[str, str]):
    __slots__ = ("_index", "_items", "raw")

    def __init__(self, raw: RawHeaders) -> None:
        self.raw = raw
        self._index: dict[str, str] | None = None
        self._items: list[tuple[str, str]] | None = None

    def _build(self) -> dict[str, str]:
        index: dict[str, str] = {}
        for name, value in self.raw:
            index.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        self._index = index
        return index

    def __getitem__(self, name: str) -> str:
        index = self._index if self._index is not None else self._build()
        return index[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        if self._index is not None:
            return self._index.get(name.lower(), default)
        want = name.lower().encode("latin-1")  # one look: a scan is cheaper than the index
        size = len(want)
        for n, v in self.raw:
            if len(n) == size and n.lower() == want:
                return v.decode("latin-1")
        return default

    def __contains__(self, name: object) -> bool:
        index = self._index if self._index is not None else self._build()
        return isinstance(name, str) and name.lower() in index

    def __iter__(self) -> Iterator[str]:
        index = self._index if self._index is not None else self._build()
        return iter(index)

    def __len__(self) -> int:
        index = self._index if self._index is not None else self._build()
        return len(index)

    def getall(self, name: str) -> list[str]:
        want = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self.raw if n.lower() == want]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        """Every header line, in order (repeated names included); decoded once."""
        items = self._items
        if items is None:
            items = self._items = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw]
        return items

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"
