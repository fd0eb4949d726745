"""An immutable mapping whose updated copies cost the size of the change, not of the map.

A scheduling cycle assumes thousands of placements, each returning a new `ClusterSnapshot`;
copying a 5,000-node dict each time would make the cycle quadratic. `LayeredMap` keeps a
frozen base dict and a small top layer of changes (a removed key is a tombstone in the top);
when the top outgrows the square root of the base, the next copy folds it into a new base.
So k updates of an n-key map cost O(k·√n) instead of O(k·n).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_GONE = object()
_MISSING = object()


class LayeredMap(Mapping[K, V], Generic[K, V]):
    """A read-only mapping; `updated` and `removed` return changed copies."""

    __slots__ = ("_base", "_size", "_top")

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        self._base: dict[K, V] = dict(items or {})
        self._top: dict[K, object] = {}
        self._size = len(self._base)

    @classmethod
    def _layered(cls, base: dict[K, V], top: dict[K, object], size: int) -> LayeredMap[K, V]:
        made: LayeredMap[K, V] = cls.__new__(cls)
        made._base, made._top, made._size = base, top, size
        if len(top) > max(16, math.isqrt(len(base))):
            folded = dict(base)
            for key, value in top.items():
                if value is _GONE:
                    folded.pop(key, None)  # a key added on top and removed again is not in the base
                else:
                    folded[key] = value  # type: ignore[assignment]
            made._base, made._top = folded, {}
        return made

    def updated(self, changes: Mapping[K, V]) -> LayeredMap[K, V]:
        """A copy with `changes` set (added or replaced)."""
        added = 0
        for key in changes:
            if key not in self:
                added += 1
        return self._layered(self._base, {**self._top, **changes}, self._size + added)

    def removed(self, key: K) -> LayeredMap[K, V]:
        """A copy without `key` (KeyError when absent)."""
        if key not in self:
            raise KeyError(key)
        return self._layered(self._base, {**self._top, key: _GONE}, self._size - 1)

    def __getitem__(self, key: K) -> V:
        if key in self._top:
            value = self._top[key]
            if value is _GONE:
                raise KeyError(key)
            return value  # type: ignore[return-value]
        return self._base[key]

    def __contains__(self, key: object) -> bool:
        top: dict[object, object] = self._top  # type: ignore[assignment]
        base: dict[object, object] = self._base  # type: ignore[assignment]
        return top.get(key, base.get(key, _GONE)) is not _GONE

    def __iter__(self) -> Iterator[K]:
        """Base keys in insertion order, then keys added on top, in the order they were added."""
        top = self._top
        for key in self._base:
            if top.get(key) is not _GONE:
                yield key
        for key, value in top.items():
            if value is not _GONE and key not in self._base:
                yield key

    def values(self) -> list[V]:  # type: ignore[override]
        """The values in iteration order, as a list (faster than the generic view)."""
        top = self._top
        if not top:
            return list(self._base.values())
        found = [top.get(key, value) for key, value in self._base.items() if top.get(key) is not _GONE]
        found += [value for key, value in top.items() if value is not _GONE and key not in self._base]
        return found  # type: ignore[return-value]

    def changed_keys(self, other: object) -> set[K] | None:
        """The keys whose values differ from `other`'s (by identity), when both grew from the same
        base (so only their top layers can differ); None when that is not known."""
        if not isinstance(other, LayeredMap) or other._base is not self._base:
            return None
        mine, theirs, base = self._top, other._top, self._base
        changed: set[K] = set()
        for key, value in mine.items():  # _GONE stands for absent
            found = theirs.get(key, _MISSING)
            if found is _MISSING:
                found = base.get(key, _GONE)
            if found is not value:
                changed.add(key)
        for key, value in theirs.items():
            if key not in mine and base.get(key, _GONE) is not value:
                changed.add(key)
        return changed

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"LayeredMap({dict(self.items())!r})"
