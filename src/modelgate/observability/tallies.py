"""Counters and histograms fed on every request, counted in plain numbers: counters are
added to their prometheus-client children only when they are read, histograms are exported
from the plain numbers themselves (:class:`TalliedHistogram`).

prometheus-client takes a lock per ``inc``; a request bumps several counters (its outcome,
usage rows and tokens, the HTTP answer, an anomaly). A :class:`Tally` is one child counted
as an integer by the event loop; :class:`Tallies`, registered on the registry ahead of the
counters, adds what each tally counted since the last read before every collection (a
scrape, ``get_sample_value`` in a test) and whenever :meth:`Tallies.flush` is called (the
alert evaluator). The figures are exact at every read.

A histogram is tallied differently: adding a float sum to a child by differences would not
give the same float as adding each observation in turn, so :class:`TalliedHistogram` keeps
the buckets and the sum itself and yields, at collection, the samples prometheus-client's
``Histogram`` would have, equal to the last bit.
"""

from __future__ import annotations

import math
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["HistogramTally", "TalliedHistogram", "Tallies", "Tally"]


class Tally:
    """One counter child counted on the request path as a plain integer. Only the event
    loop adds to ``total``; a flush, under :class:`Tallies`' lock, adds what is new since
    the last one, so a flush from another thread loses nothing."""

    __slots__ = ("_flushed", "child", "total")

    def __init__(self, child: Counter) -> None:
        self.child = child
        self.total = 0
        self._flushed = 0

    def flush(self) -> None:
        total = self.total
        if total != self._flushed:
            self.child.inc(total - self._flushed)
            self._flushed = total


class Tallies(Collector):
    """The tallies of one registry. Register it before the counters it feeds: collecting
    it flushes them, and it yields no metric of its own."""

    def __init__(self) -> None:
        self._tallies: list[Tally] = []
        self._lock = threading.Lock()

    def tally(self, child: Counter) -> Tally:
        """A counter child counted in a plain integer, added to it at each :meth:`flush`."""
        tally = Tally(child)
        with self._lock:
            self._tallies.append(tally)
        return tally

    def flush(self) -> None:
        """Add what every tally counted since the last flush to its child."""
        with self._lock:
            for tally in self._tallies:
                tally.flush()

    def collect(self) -> Iterable[Metric]:
        self.flush()
        return ()


class HistogramTally:
    """One histogram child observed on the request path in plain numbers: a count per bucket
    and the sum, which :class:`TalliedHistogram` reads when the registry is collected. Only
    the event loop observes; a collection from another thread reads what is there, as it
    would read prometheus-client's children (one bucket and the sum are not read at one
    instant there either)."""

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        """What prometheus-client's ``Histogram.observe`` does: ``value`` added to the sum,
        in the same order, so the sum is the same float; one more in the first bucket whose
        upper bound is at least ``value`` (none for NaN, which compares false)."""
        self.sum += value
        index = bisect_left(self._bounds, value)
        if value <= self._bounds[index]:
            self.counts[index] += 1


class TalliedHistogram(Collector):
    """A histogram with labels whose children are :class:`HistogramTally`: on collection, the
    samples prometheus-client's ``Histogram`` gives (cumulative ``_bucket`` counts with
    ``le``, ``_count``, ``_sum``, ``_created``), from the same observations, so a scrape
    cannot tell them apart; an observation costs a bisection and two adds, no lock.

    ``_created`` is left out when ``PROMETHEUS_DISABLE_CREATED_SERIES`` says so, as
    prometheus-client reads it at import."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError("buckets not in sorted order")
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name = name
        self.documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(bounds)
        # prometheus-client's own spelling of ``le`` (untyped there)
        self._les = tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, ...], HistogramTally] = {}
        self._lock = threading.Lock()
        self._created = os.environ.get(
            "PROMETHEUS_DISABLE_CREATED_SERIES", "False"
        ).lower() not in ("true", "1", "t")
        registry.register(self)

    def labels(self, *values: str) -> HistogramTally:
        """The child of these label values, made at its first use (at 0, as prometheus-client
        makes a child at ``labels``)."""
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self._labelnames):
                raise ValueError(f"{self.name}: expected labels {self._labelnames}, got {key}")
            with self._lock:
                child = self._children.setdefault(key, HistogramTally(self._bounds))
        return child

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.name, self.documentation, "histogram")]

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, self.documentation, "histogram")
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            labels = dict(zip(self._labelnames, values, strict=True))
            cumulative = 0.0  # a float, as prometheus-client sums its bucket values
            for le, count in zip(self._les, list(child.counts), strict=True):
                cumulative += count
                metric.add_sample(f"{self.name}_bucket", {**labels, "le": le}, cumulative)
            metric.add_sample(f"{self.name}_count", labels, cumulative)
            if self._bounds[0] >= 0:  # prometheus-client gives no sum when a bound is negative
                metric.add_sample(f"{self.name}_sum", labels, child.sum)
            if self._created:
                metric.add_sample(f"{self.name}_created", labels, child.created)
        return [metric]
