"""Per-version inference statistics in the shape of Triton's statistics extension.

:class:`VersionStats` is also the :class:`VersionObserver` handed to the batcher: it keeps
Triton's counters and forwards to the metrics sink, so both views count the same events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from modelgate.core.serving.ports import VersionObserver

__all__ = ["Duration", "VersionStats"]


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class VersionStats:
    """Counters for one loaded model version. Not thread-safe: touched only on the loop."""

    def __init__(self, name: str, version: str, sink: VersionObserver | None = None):
        self.name = name
        self.version = version
        self._sink = sink
        self.success = Duration()
        self.fail = Duration()
        self.queue_time = Duration()
        self.compute_infer = Duration()
        self.cache_hit = Duration()
        self.cache_miss = Duration()
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        #: ``compute_infer`` per batch size (Triton's ``batch_stats``)
        self._batches: dict[int, Duration] = {}

    # -- what the inference service records -------------------------------------------
    def succeeded(self, rows: int, total_ns: int, queue_ns: int, compute_ns: int) -> None:
        self.success.add(total_ns)
        self.queue_time.add(queue_ns)
        self.compute_infer.add(compute_ns)
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        if self._sink is not None:
            self._sink.request("success", total_ns / 1e9)

    def cached(self, total_ns: int) -> None:
        """A request answered from the result cache: a success, but no inference (Triton
        counts neither ``inference_count`` nor ``execution_count`` for cache hits)."""
        self.success.add(total_ns)
        self.last_inference_ms = int(time.time() * 1000)
        if self._sink is not None:
            self._sink.request("success", total_ns / 1e9)

    def cache_lookup(self, hit: bool, ns: int) -> None:
        (self.cache_hit if hit else self.cache_miss).add(ns)

    def failed(self, total_ns: int, status: str) -> None:
        self.fail.add(total_ns)
        if self._sink is not None:
            self._sink.request(status, total_ns / 1e9)

    # -- VersionObserver, for the batcher ----------------------------------------------
    def request(self, status: str, seconds: float) -> None:
        if self._sink is not None:
            self._sink.request(status, seconds)

    def batch(self, size: int, compute_ns: int) -> None:
        self.execution_count += 1
        duration = self._batches.get(size)
        if duration is None:
            duration = self._batches[size] = Duration()
        duration.count += 1  # Duration.add, inline: this runs once per batch, often per request
        duration.ns += compute_ns
        if self._sink is not None:
            self._sink.batch(size, compute_ns)

    def queue(self, depth: int) -> None:
        if self._sink is not None:
            self._sink.queue(depth)

    def as_dict(self) -> dict[str, Any]:
        """Triton's ``model_stats`` entry for this version."""
        empty = Duration().as_dict()
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue_time.as_dict(),
                "compute_input": empty,
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": empty,
                "cache_hit": self.cache_hit.as_dict(),
                "cache_miss": self.cache_miss.as_dict(),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": empty,
                    "compute_infer": duration.as_dict(),
                    "compute_output": empty,
                }
                for size, duration in sorted(self._batches.items())
            ],
        }
