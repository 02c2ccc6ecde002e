"""``RegionalNodeDirectory``: a gateway's nodes from its own region's directory and from the
other regions' (``MODELGATE_REGION_REDIS_URLS``), as one table.

Each region keeps its own Redis (limits, caches and announcements are regional: a region's
loss must not take another's Redis with it), and a node announces itself in its own
region's only. A gateway reads its own region's directory and, each refresh, the other
regions' too (one ``SCAN`` and ``MGET`` each, concurrently), so that it knows where to
fail over before it has to (:mod:`modelgate.core.gateway.regions`).

A region whose directory does not answer keeps the nodes it listed last, for at most
``stale_s``: a lost region's nodes are then left in the table with their breakers open
(probed every ``MODELGATE_BREAKER_OPEN_SECONDS``), the way a region that only lost its
Redis keeps serving. After ``stale_s`` they are dropped. Only the own directory's failure
is the refresh's failure (the gateway keeps its whole last table then, as before).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from modelgate.core.gateway.nodes import NodeInfo
from modelgate.core.gateway.ports import NodeDirectory

__all__ = ["RegionalNodeDirectory"]

log = logging.getLogger("modelgate.cluster")


class RegionalNodeDirectory:
    """The own directory first, then the others; a node id seen twice is the first one's."""

    def __init__(
        self,
        own: NodeDirectory,
        others: Sequence[NodeDirectory],
        *,
        stale_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.own = own
        self.others = list(others)
        self.stale_s = stale_s
        self._clock = clock
        #: per other directory: its last answer and when it came
        self._last: list[tuple[list[NodeInfo], float]] = [([], 0.0) for _ in self.others]
        self._failing = [False for _ in self.others]

    async def nodes(self) -> list[NodeInfo]:
        results = await asyncio.gather(
            self.own.nodes(), *(d.nodes() for d in self.others), return_exceptions=True
        )
        own = results[0]
        if isinstance(own, BaseException):
            raise own
        found = list(own)
        seen = {node.id for node in found}
        now = self._clock()
        for index, result in enumerate(results[1:]):
            if isinstance(result, BaseException):
                if not self._failing[index]:
                    log.warning("region directory %d did not answer: %r", index + 1, result)
                self._failing[index] = True
                listed, at = self._last[index]
                if now - at > self.stale_s:
                    continue
            else:
                if self._failing[index]:
                    log.info("region directory %d answers again", index + 1)
                self._failing[index] = False
                listed = list(result)
                self._last[index] = (listed, now)
            for node in listed:
                if node.id not in seen:
                    seen.add(node.id)
                    found.append(node)
        return found

    async def close(self) -> None:
        for directory in (self.own, *self.others):
            await directory.close()
