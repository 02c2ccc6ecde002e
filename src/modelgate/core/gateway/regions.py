"""Regions: a gateway prefers the nodes of its own region and fails over to another region
only when its own has no healthy node for the model, and back when one recovers.

This is Envoy's priority levels with regions as the levels (Envoy's answer to "fail over
to another region": the fallback endpoints in a lower priority). The gateway's own region
is level 0; the regions named in ``MODELGATE_REGION_FAILOVER`` follow in that order; every
other region is the last level. A node that announces no region is taken to be in the
gateway's own region (a cluster upgraded one process at a time keeps routing as before).
Where Envoy's default overprovisioning factor (140%) starts moving a share of the traffic
once fewer than about 72% of a level's hosts are healthy, here a level keeps all of it
while it has one healthy node for the model (Envoy with a factor too large to matter): a
region that lost some nodes still serves locally, and cross-region latency is paid only
when the region can serve nothing.

**Healthy** here is "it has answered a call since it joined the gateway's table, and its
breakers are closed". A region whose nodes' breakers are open is left; when an open
breaker's ``open_s`` passes, the node is tried again (the breaker's probe) while the other
requests still go to the other region, and the region is back once the probe succeeded
and the breaker closed. A node that rejoins the table (restarted, its entry new) gets
requests at once, as the own region's, but the region counts as back only after its first
answer: a node announced before its port accepts calls (or while the gateway's connection
to it is still in its reconnect backoff) fails those calls, which are retried elsewhere,
and the log does not flap. So a dead region's probes cost one failed
attempt per node every ``open_s`` (each retried at once elsewhere), and the log and the
failover counter see one transition each way, not one per probe.

The decision is per model version (a region can serve one model and not another). It is
logged once per transition (``modelgate.cluster``, WARNING when leaving the own region,
INFO when coming back) and counted (:class:`RegionObserver`).

Cost: nothing on a gateway without a region (the cluster holds no policy then). With one,
a dictionary look-up per candidate node and one per request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

__all__ = ["REGION_PATTERN", "RegionObserver", "RegionPolicy", "valid_region"]

log = logging.getLogger("modelgate.cluster")

T = TypeVar("T")

#: what a region name may be: it becomes a metric label and a response parameter
REGION_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_REGION = re.compile(REGION_PATTERN)


def valid_region(name: str) -> bool:
    return _REGION.fullmatch(name) is not None


class RegionObserver(Protocol):
    """Metrics of the regions (Prometheus in production). Never blocks."""

    def forwarded(self, region: str, outcome: str) -> None:
        """One call to a node of ``region``: ``ok`` or the error kind."""

    def failover(self, model: str, version: str, origin: str, target: str) -> None:
        """The model version's traffic moved from region ``origin`` to ``target``."""


class RegionPolicy:
    """The gateway's region and the order it fails over in."""

    __slots__ = ("_level_of", "_observer", "_serving", "failover", "region")

    def __init__(
        self,
        region: str,
        failover: Sequence[str] = (),
        *,
        observer: RegionObserver | None = None,
    ):
        if not valid_region(region) or not all(valid_region(r) for r in failover):
            raise ValueError(f"a region name matches {REGION_PATTERN}")
        self.region = region
        self.failover = tuple(r for r in dict.fromkeys(failover) if r != region)
        #: region -> its level (the own region 0, the failover list in order); others: last
        self._level_of = {region: 0, "": 0} | {r: n + 1 for n, r in enumerate(self.failover)}
        self._observer = observer
        #: (model, version) -> the region whose nodes serve it now (its healthy level's)
        self._serving: dict[tuple[str, int], str] = {}

    def level(self, region: str) -> int:
        """0 for the own region (and a node with none), then the failover order, then the rest."""
        return self._level_of.get(region, len(self.failover) + 1)

    def nearest(self, pool: list[T], region_of: Callable[[T], str]) -> list[T]:
        """The members of ``pool`` on its lowest level (``pool`` itself when that is all)."""
        if len(pool) < 2:
            return pool
        levels = [self.level(region_of(member)) for member in pool]
        best = min(levels)
        if all(level == best for level in levels):
            return pool
        return [member for member, level in zip(pool, levels, strict=True) if level == best]

    def observe(self, model: str, version: int, healthy: Iterable[str]) -> None:
        """Note the regions of the version's healthy nodes now; a change of the region that
        serves it (the lowest level among them) is logged and counted once."""
        found: tuple[int, str] | None = None
        for region in healthy:
            name = region or self.region
            candidate = (self.level(name), name)
            if found is None or candidate < found:
                found = candidate
        if found is None:
            return  # no healthy node anywhere: nothing to move to; the breakers say it
        best_level, best = found
        key = (model, version)
        previous = self._serving.get(key)
        if previous == best:
            return
        self._serving[key] = best
        if previous is None:
            if best_level == 0:
                return  # the start: served at home, as expected
            previous = self.region
        if best_level == 0:
            log.info(
                "model %s v%d: region %s has a healthy node again; back from region %s",
                model, version, best, previous,
            )  # fmt: skip
        else:
            log.warning(
                "model %s v%d: no healthy node in region %s; failing over to region %s",
                model, version, previous, best,
            )  # fmt: skip
        if self._observer is not None:
            self._observer.failover(model, str(version), previous, best)

    def counted(self, region: str, outcome: str) -> None:
        if self._observer is not None:
            self._observer.forwarded(region or self.region, outcome)
