"""The metric series recorded from real modelgate processes
(``fixtures/scaling_series.json``, written by ``python -m bench.scaling_series``), read as
the chart's queries read them: each poll's requests in flight and waiting, and the p95/p99
of its latency histograms over a rate window, computed as Prometheus'
``histogram_quantile`` does. The KEDA and HPA rules replayed over them are in
tests/deploy/test_keda_scaling.py."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = ["FIXTURE", "Recording", "Row", "histogram_quantile"]

FIXTURE = Path(__file__).parent / "fixtures" / "scaling_series.json"


@dataclass(frozen=True)
class Row:
    """One recorded second (one poll): see bench.scaling_series.COLUMNS."""

    offered: int
    node_up: bool
    node_inflight: float
    gateway_inflight: float
    waiting: float
    node_buckets: tuple[int, ...]
    gateway_buckets: tuple[int, ...]


@dataclass(frozen=True)
class Recording:
    header: dict[str, Any]
    rows: tuple[Row, ...]

    @classmethod
    def load(cls, path: Path = FIXTURE) -> Recording:
        document = json.loads(path.read_text())
        header = document["header"]
        columns = header["columns"]
        rows = []
        for values in document["rows"]:
            row = dict(zip(columns, values, strict=True))
            rows.append(
                Row(
                    row["offered"],
                    bool(row["node_up"]),
                    row["node_inflight"],
                    row["gateway_inflight"],
                    row["gateway_cold_start_waiting"],
                    tuple(row["node_latency_bucket_increments"]),
                    tuple(row["gateway_latency_bucket_increments"]),
                )
            )
        return cls(header, tuple(rows))

    @property
    def seconds_per_row(self) -> int:
        """KEDA's seconds one row stands for."""
        return int(self.header["keda_seconds_per_row"])

    @cached_property
    def bounds(self) -> tuple[float, ...]:
        return tuple(float(le) for le in self.header["le"])

    def rows_in(self, seconds: float) -> int:
        return math.ceil(seconds / self.seconds_per_row)

    def quantile(
        self, q: float, ends: list[int], window_s: float, *, gateway: bool = False
    ) -> float:
        """``histogram_quantile(q, sum by (le) (rate(...[window])))`` over the windows ending
        at ``ends`` (one per node, summed as ``sum by (le)`` sums the pods), or 0 without
        requests in them (the queries' ``> 0 or vector(0)``)."""
        rows = [row for end in ends for row in self.window(end, window_s)]
        cumulative = [0] * len(self.bounds)  # each bucket counts the requests at or below it
        for row in rows:
            increments = row.gateway_buckets if gateway else row.node_buckets
            cumulative = [a + b for a, b in zip(cumulative, increments, strict=True)]
        value = histogram_quantile(q, self.bounds, cumulative)
        return value if value > 0 else 0.0  # NaN > 0 is false too

    def window(self, end: int, seconds: float) -> tuple[Row, ...]:
        return self.rows[max(0, end - self.rows_in(seconds) + 1) : end + 1]

    @cached_property
    def rising(self) -> list[int]:
        """The rows a node's response to a load is read from: the morning up to the day's
        top (each state there came from a load that had only grown), once the cold start is
        over: neither the requests that waited for the node nor the burst they made when it
        came (a rate window after the last) in the rate window."""
        spike = self.header["spike_seconds"][0]
        top = max(range(spike), key=lambda i: (self.rows[i].offered, -i))
        last_waiting = max(i for i in range(top) if self.rows[i].waiting)
        return list(range(last_waiting + 2 * self.rows_in(120), top + 1))

    def nearest(self, offered: float, count: int) -> list[int]:
        """The ``count`` rising rows whose offered rates were nearest ``offered`` (the
        earliest of ties): ``count`` nodes each at that load, each read at its own moment."""
        ranked = sorted(self.rising, key=lambda i: (abs(self.rows[i].offered - offered), i))
        assert len(ranked) >= count, "the recording has too few rows for this many nodes"
        return ranked[:count]


def histogram_quantile(q: float, bounds: tuple[float, ...], cumulative: list[int]) -> float:
    """Prometheus' ``histogram_quantile`` (promql/quantile.go): linear within the bucket the
    rank falls in, the lowest bucket starting at 0, the +Inf bucket answered with the
    largest finite bound; NaN without observations."""
    total = cumulative[-1]
    if total == 0:
        return math.nan
    rank = q * total
    index = next(i for i, c in enumerate(cumulative) if c >= rank)
    if index == len(bounds) - 1:
        return bounds[-2]
    start = 0.0 if index == 0 else bounds[index - 1]
    below = 0 if index == 0 else cumulative[index - 1]
    inside = cumulative[index] - below
    return start + (bounds[index] - start) * (rank - below) / inside
