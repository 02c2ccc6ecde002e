"""Sliding windows of one version's monitored tensors: the requests noted on the request
path (:class:`Fold`) and the ring buffers they are copied into in one vectorized step every
:data:`FOLD_EVERY` requests (:class:`Window`), so that a full window holds no Python object
per request and costs the garbage collector nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FOLD_EVERY", "Array", "Fold", "Window"]

Array = np.ndarray[Any, Any]


@dataclass(slots=True)
class Fold:
    """One version's requests noted since the last fold (each tensor's arrays by name:
    a request appends to its tensors' lists, built by the first request that names one)."""

    parts: defaultdict[str, list[Array]] = field(default_factory=lambda: defaultdict(list))
    firsts: list[int] = field(default_factory=list)
    rows: int = 0
    #: an embedding model's embeddings, kept apart (a smaller window)
    wide: defaultdict[str, list[Array]] = field(default_factory=lambda: defaultdict(list))


#: requests noted before they are copied into the windows in one step
FOLD_EVERY = 256


class Window:
    """The last ``capacity`` rows of one version's monitored tensors, in ring buffers.

    Each tensor's rows are copied (as float64, flattened after the batch dimension) into a
    preallocated array: adding a request is a slice assignment per tensor, with no Python
    object kept per request, so a full window costs the garbage collector nothing."""

    __slots__ = ("capacity", "count", "position", "requests", "rings", "shapes", "times")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.position = 0  # where the next row goes
        self.count = 0  # rows held, up to capacity
        self.times = np.zeros(capacity, dtype=np.float64)
        #: 1 on the first row of each request
        self.requests = np.zeros(capacity, dtype=np.int64)
        self.rings: dict[str, Array] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # each tensor's shape after its rows

    def add(
        self, at: float, rows: int, arrays: dict[str, Array], firsts: Sequence[int] = (0,)
    ) -> None:
        """Add ``rows`` rows (``arrays``, batch dimension first) from requests whose first
        rows are at the offsets ``firsts``."""
        capacity = self.capacity
        skip = max(rows - capacity, 0)  # a request bigger than the window: its last rows
        rows -= skip
        start = self.position
        end = start + rows
        # one or two contiguous slices of the ring (plain slices: no index arrays to build)
        parts = (
            ((start, end, 0),)
            if end <= capacity
            else (
                (start, capacity, 0),
                (0, end - capacity, capacity - start),
            )
        )
        for name, array in arrays.items():
            flat = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
            ring = self.rings.get(name)
            if ring is None:
                ring = self.rings[name] = np.full((capacity, flat.shape[1]), np.nan)
                self.shapes[name] = tuple(array.shape[1:])
            fits = flat.shape[0] == rows + skip and ring.shape[1] == flat.shape[1]
            for lo, hi, offset in parts:
                if fits:
                    ring[lo:hi] = flat[skip + offset : skip + offset + hi - lo]
                else:  # rows or width that do not match: not monitored here
                    ring[lo:hi] = np.nan
        for lo, hi, _ in parts:
            self.times[lo:hi] = at
            self.requests[lo:hi] = 0
        kept = np.asarray(firsts, dtype=np.int64)
        kept = kept[kept >= skip] - skip  # requests whose first row is still in the window
        self.requests[(start + kept) % capacity] = 1
        self.position = end % capacity
        self.count = min(self.count + rows, capacity)

    def since(self, start: float) -> tuple[int, int, dict[str, Array]]:
        """(rows, requests, each tensor's rows) of the rows added at or after ``start``."""
        held = np.arange(self.count) if self.count < self.capacity else np.arange(self.capacity)
        recent = held[self.times[held] >= start]
        data = {}
        for name, ring in self.rings.items():
            rows = ring[recent]
            rows = rows[~np.isnan(rows).any(axis=1)]  # NaN marks rows not monitored
            data[name] = rows.reshape((len(rows), *self.shapes[name]))
        return len(recent), int(self.requests[recent].sum()), data
