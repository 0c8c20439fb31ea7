"""The per-process budget over decoded ``.nii.gz`` volumes (least recently used dropped first).

Backends own their decoded arrays; this cache (a :class:`cachetools.LRUCache`
sized in bytes) only decides whose to drop, by calling their ``release()``,
when a new one would exceed ``$VOXELFLOW_GZ_CACHE_BYTES`` (default 2 GiB).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import cachetools


def cache_budget() -> int:
    """Bytes of decoded volumes one process keeps (``$VOXELFLOW_GZ_CACHE_BYTES``, 2 GiB)."""
    value = os.environ.get("VOXELFLOW_GZ_CACHE_BYTES")
    return int(value) if value else 2 << 30


class _Entries(cachetools.LRUCache):  # type: ignore[type-arg]
    """An LRU of ``id(owner) -> (weakref(owner), nbytes)`` that remembers whom it evicted."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize=maxsize, getsizeof=lambda entry: entry[1])
        self.evicted: list[Any] = []

    def popitem(self) -> tuple[Any, Any]:
        key, (ref, nbytes) = super().popitem()
        self.evicted.append(ref())
        return key, (ref, nbytes)


class DecodeCache:
    """A process-wide least-recently-used budget over backends' decoded volumes.

    Example:
        >>> from voxelflow.backends.gzindex.cache import DecodeCache
        >>> class Owner:
        ...     def release(self): print("released")
        >>> cache, a, b = DecodeCache(), Owner(), Owner()
        >>> cache.admit(a, 2 << 30), cache.admit(b, 1 << 30)
        released
        (True, True)
    """

    def __init__(self) -> None:
        self._entries = _Entries(cache_budget())
        self._lock = threading.Lock()

    def _sized(self) -> _Entries:
        budget = cache_budget()
        if self._entries.maxsize != budget:  # the budget changed: keep the newest that fit
            old, self._entries = self._entries, _Entries(budget)
            for key, entry in old.items():
                if entry[1] <= budget:
                    self._entries[key] = entry
        return self._entries

    def admit(self, owner: Any, nbytes: int, *, force: bool = False) -> bool:
        """Make room for ``nbytes`` held by ``owner``; False if it can never fit (unless forced).

        A forced volume larger than the whole budget empties the cache and is
        not tracked (nothing else fits beside it).
        """
        with self._lock:
            entries = self._sized()
            entries.pop(id(owner), None)
            if nbytes > entries.maxsize:
                if not force:
                    return False
                entries.evicted.extend(ref() for ref, _ in entries.values())
                entries.clear()
            else:
                entries[id(owner)] = (weakref.ref(owner), nbytes)
            victims, entries.evicted = entries.evicted, []
        for victim in victims:
            if victim is not None and victim is not owner:
                victim.release()
        return True

    def touch(self, owner: Any) -> None:
        with self._lock:
            self._entries.get(id(owner))  # a lookup refreshes its place

    def forget(self, owner: Any) -> None:
        with self._lock:
            self._entries.pop(id(owner), None)

    def held(self) -> int:
        with self._lock:
            return int(self._entries.currsize)


DECODE_CACHE = DecodeCache()
