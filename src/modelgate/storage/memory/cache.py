"""``MemoryResultStore``: cached results in a dictionary of this process, least recently
used first out when either bound (entries, bytes) is passed. Entries are kept as objects
(nothing is copied or encoded on a hit); expired ones are dropped as they are met."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from modelgate.core.serving.ports import CachedResult, CacheObserver

__all__ = ["MemoryResultStore"]


class MemoryResultStore:
    """A :class:`~modelgate.core.serving.ports.ResultStore`; touched only on the event loop."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
        observer: CacheObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a result store needs room for at least one entry")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._observer = observer
        self._clock = clock
        self._entries: OrderedDict[str, tuple[CachedResult, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedResult | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0].stale_until <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: str, result: CachedResult) -> None:
        size = result.size_bytes()
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (result, size)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest, (evicted, _) = next(iter(self._entries.items()))
            self._drop(oldest)
            if self._observer is not None:
                self._observer.cache_event(evicted.model, "eviction")

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: str) -> None:
        _, size = self._entries.pop(key)
        self.bytes -= size
