"""How much each model is used in each hour of the week, from the usage records: what the
registry's predictive warm pool (:mod:`modelgate.core.serving.preloading`) expects.

The profile is the mean number of requests per model in each of the week's 168 UTC hours
over the history read (``weeks``, 4 by default): Monday 00:00-01:00 is hour 0. A model with
no requests in the history expects none. Traffic with a weekly rhythm (office hours,
nightly batches, weekends) is what it captures; a model's first week is not predicted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["HOURS_PER_WEEK", "HourlyCount", "UsageHistory", "UsageProfile", "hour_of_week"]

HOURS_PER_WEEK = 7 * 24


@dataclass(frozen=True, slots=True)
class HourlyCount:
    """Requests of one model in one UTC hour (``hour`` is its start)."""

    hour: datetime
    model: str
    requests: int


class UsageHistory(Protocol):
    """Where the usage records are read back (the usage store)."""

    async def hourly(self, since: datetime) -> list[HourlyCount]:
        """Requests per model and UTC hour for the hours starting at or after ``since``
        (records of every status, every tenant), in no particular order."""
        ...


def hour_of_week(at: datetime) -> int:
    at = at.astimezone(UTC)
    return at.weekday() * 24 + at.hour


class UsageProfile:
    """Mean requests per model and hour of the week."""

    def __init__(self, means: dict[str, list[float]] | None = None) -> None:
        self._means = means or {}

    @classmethod
    def from_counts(cls, counts: Iterable[HourlyCount], weeks: float) -> UsageProfile:
        """The profile of ``weeks`` weeks of counts (at least one week is assumed)."""
        weeks = max(weeks, 1.0)
        means: dict[str, list[float]] = {}
        for count in counts:
            row = means.setdefault(count.model, [0.0] * HOURS_PER_WEEK)
            row[hour_of_week(count.hour)] += count.requests / weeks
        return cls(means)

    @property
    def models(self) -> list[str]:
        return sorted(self._means)

    def expected(self, model: str, at: datetime) -> float:
        """Mean requests of ``model`` in the hour of the week ``at`` falls in."""
        row = self._means.get(model)
        return row[hour_of_week(at)] if row is not None else 0.0

    def need(self, model: str, now: datetime, horizon: timedelta) -> float:
        """Expected requests from ``now`` to ``now + horizon``: the rest of this hour, the
        hours after, and the start of the last one, each in proportion."""
        row = self._means.get(model)
        if row is None or horizon <= timedelta(0):
            return 0.0
        total = 0.0
        at, end = now, now + horizon
        while at < end:
            hour_end = at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            part = (min(hour_end, end) - at) / timedelta(hours=1)
            total += row[hour_of_week(at)] * part
            at = hour_end
        return total
