"""Counters bumped on every request, counted in plain integers and added to their
prometheus-client children only when they are read.

prometheus-client takes a lock per ``inc``; a request bumps several counters (its outcome,
usage rows and tokens, the HTTP answer, an anomaly). A :class:`Tally` is one child counted
as an integer by the event loop; :class:`Tallies`, registered on the registry ahead of the
counters, adds what each tally counted since the last read before every collection (a
scrape, ``get_sample_value`` in a test) and whenever :meth:`Tallies.flush` is called (the
alert evaluator). The figures are exact at every read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["Tallies", "Tally"]


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
