"""Capacity classes: cheap spot nodes that can be reclaimed at short notice, and reliable
on-demand ones.

A node announces its class (``MODELGATE_CAPACITY_CLASS``: ``on-demand``, the default, or
``spot``). Among the nodes a request could go to (after placement, health and region):

- **non-critical work** (asynchronous job items, shadow copies: ``Timing.critical`` false)
  goes to spot nodes when any can take it, else to on-demand ones;
- **interactive requests** go to on-demand nodes, and to spot nodes only when every
  on-demand node is saturated (``saturation`` calls in flight from this gateway, or more)
  or none can take it. ``saturation`` 0 never spills: spot serves interactive requests
  only when no on-demand node can.

A reclaimed spot node drains like any node on SIGTERM (the gateways stop choosing it, its
calls in flight finish or are retried elsewhere), and its job worker hands its unfinished
items back to the queue (:meth:`modelgate.core.jobs.worker.JobWorker.hand_back`).

Cost: nothing while no node of the table is spot (the cluster holds no policy then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

__all__ = ["CAPACITY_CLASSES", "CapacityClass", "CapacityPolicy"]

T = TypeVar("T")

CapacityClass = Literal["on-demand", "spot"]
CAPACITY_CLASSES: tuple[CapacityClass, ...] = ("on-demand", "spot")


class CapacityPolicy:
    """Which class of node a request prefers."""

    __slots__ = ("saturation",)

    def __init__(self, saturation: int = 16):
        if saturation < 0:
            raise ValueError("saturation is a count of calls in flight, 0 or more")
        self.saturation = saturation

    def prefer(
        self,
        pool: list[T],
        critical: bool,
        capacity_of: Callable[[T], str],
        outstanding_of: Callable[[T], int],
    ) -> list[T]:
        """The members of ``pool`` the request should choose among (never empty when
        ``pool`` is not)."""
        spot = [member for member in pool if capacity_of(member) == "spot"]
        if not spot or len(spot) == len(pool):
            return pool
        if not critical:
            return spot
        on_demand = [member for member in pool if capacity_of(member) != "spot"]
        if self.saturation == 0:
            return on_demand
        if any(outstanding_of(member) < self.saturation for member in on_demand):
            return on_demand
        return pool  # every on-demand node is saturated: the least busy node of either class
