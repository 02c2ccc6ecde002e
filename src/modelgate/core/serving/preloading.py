"""The predictive warm pool: models loaded ahead of the traffic their usage history expects,
and the least likely needed evicted first when the memory budget is short.

Each model's manifest says how it is kept warm (``warm``): ``always`` (loaded at start,
never evicted), ``predictive`` (loaded by this module before its expected traffic), or
``on-demand`` (loaded by its first request, as before). Every ``interval`` the
:class:`Preloader`:

1. reads the usage history again when the hour changed (requests per model and UTC hour
   over the last ``weeks``) and makes the hour-of-week profile of it
   (:mod:`modelgate.core.serving.usage_profile`);
2. ranks the models by their *need*: the requests the profile expects from now to
   ``now + lookahead``. The registry evicts by the same ranking (lowest first, the least
   recently used among equals), so an eviction always takes the model least likely to be
   asked for soon, whatever its policy;
3. walks the ranking from the top, adding sizes, and loads each ``predictive`` model not
   loaded that still fits in the memory budget (less the ``always`` models) and expects at
   least ``min_need`` requests. Loading one may evict loaded models further down the
   ranking, never one above it.

A model's size is what its loaded versions take (the registry's estimate, their files); a
model never loaded is taken at its repository size, as the registry counts it.

Costs: nothing on the request path (the ranking is read when the registry evicts, after a
load); one usage query an hour, and a pass over the models every ``interval``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.serving.usage_profile import UsageHistory, UsageProfile
from modelgate.errors import ModelgateError

__all__ = ["ModelSlot", "Preloader", "RegistryWarmPool", "WarmPool", "plan_loads"]

log = logging.getLogger("modelgate.preloading")


@dataclass(frozen=True, slots=True)
class ModelSlot:
    """What the plan knows of one model."""

    name: str
    warm: str  # "always", "predictive", "on-demand"
    size_bytes: int
    loaded: bool


def plan_loads(
    slots: list[ModelSlot],
    need: Callable[[str], float],
    budget_bytes: int | None,
    *,
    min_need: float = 0.5,
) -> list[str]:
    """The predictive models to load now, most needed first: those that fit in the budget
    when the models are taken in order of need (``always`` models take theirs first)."""
    room = None if budget_bytes is None else budget_bytes
    if room is not None:
        room -= sum(s.size_bytes for s in slots if s.warm == "always")
    ranked = sorted(
        (s for s in slots if s.warm != "always"),
        key=lambda s: (-need(s.name), not s.loaded, s.name),
    )
    loads = []
    for slot in ranked:
        wanted = need(slot.name)
        if room is not None:
            if slot.size_bytes > room:
                continue  # a smaller, less needed model may still fit
            room -= slot.size_bytes
        if slot.warm == "predictive" and not slot.loaded and wanted >= min_need:
            loads.append(slot.name)
    return loads


class WarmPool(Protocol):
    """What the preloader needs of the registry."""

    async def slots(self) -> list[ModelSlot]: ...

    async def load(self, name: str) -> None: ...


class Preloader:
    """Keeps the profile fresh, ranks the models, and loads the predictive ones in time."""

    def __init__(
        self,
        history: UsageHistory,
        *,
        budget_bytes: int | None,
        lookahead: timedelta = timedelta(minutes=30),
        weeks: int = 4,
        min_need: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._history = history
        self.budget_bytes = budget_bytes
        self.lookahead = lookahead
        self.weeks = weeks
        self.min_need = min_need
        self._clock = clock
        self.profile = UsageProfile()
        self._read_hour: datetime | None = None

    def need(self, model: str) -> float:
        """Requests expected for ``model`` from now to now + lookahead: the registry's
        eviction ranking."""
        return self.profile.need(model, self._clock(), self.lookahead)

    async def refresh(self) -> None:
        """Read the history again once per hour (the profile changes by the hour)."""
        now = self._clock()
        hour = now.replace(minute=0, second=0, microsecond=0)
        if self._read_hour == hour:
            return
        since = hour - timedelta(weeks=self.weeks)
        counts = await self._history.hourly(since)
        first = min((c.hour for c in counts), default=hour)
        weeks = (hour - first) / timedelta(weeks=1)
        self.profile = UsageProfile.from_counts(counts, weeks)
        self._read_hour = hour

    async def tick(self, pool: WarmPool) -> list[str]:
        """One pass: refresh, plan, load; returns the models loaded."""
        await self.refresh()
        loads = plan_loads(await pool.slots(), self.need, self.budget_bytes, min_need=self.min_need)
        loaded = []
        for name in loads:
            try:
                await pool.load(name)
            except ModelgateError as exc:
                log.warning("preloading %s failed: %s", name, exc.message)
                continue
            log.info("preloaded %s ahead of its expected traffic", name)
            loaded.append(name)
        return loaded

    async def run(self, pool: WarmPool, interval_s: float) -> None:
        while True:
            try:
                await self.tick(pool)
            except Exception as exc:  # the next pass tries again; the history may be back
                log.warning("the predictive warm pool could not plan: %r", exc)
            await asyncio.sleep(interval_s)


class RegistryWarmPool:
    """The registry as the preloader sees it. A model's size is what its loaded versions
    took when last loaded (0 before: nothing to go by, the budget is checked after the
    load anyway); a model unloaded through the repository API stays unloaded."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._sizes: dict[str, int] = {}

    async def slots(self) -> list[ModelSlot]:
        registry = self.registry
        slots = []
        for name in await asyncio.to_thread(registry.repository.names):
            versions = registry.versions(name)
            if versions:
                self._sizes[name] = sum(v.size_bytes for v in versions)
            if registry.unloaded(name):
                continue
            try:
                manifest = await registry.manifest(name)
            except ModelgateError:
                continue  # a broken model: the registry reports it
            warm = manifest.warm or "on-demand"
            slots.append(ModelSlot(name, warm, self._sizes.get(name, 0), bool(versions)))
        return slots

    async def load(self, name: str) -> None:
        await self.registry.load(name)
