"""Where a held server's CPU went in the overload row: its process tree's CPU time read at
each phase's start and end (``/proc``, from the load generator's loop at those instants),
so that a missed goodput can be told apart: the served answers costing more each than at
1x (no batches), or the refusals costing more each than the refusal row's kept-connection
figure (new connections, a loop turn per read).

What is left of the 4x phase's CPU after its served answers, each charged what one cost at
1x, went to the refusals, the new connections (the 4x stream's count is given) and work for
clients that had given up: an estimate, since a served answer under a flood may cost more
or less than at 1x (bigger batches, colder caches), and a server saturated at 1x (its whole
share used) makes the 1x cost an upper bound.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.flood.measure import Row
from bench.openloop import Outcome
from bench.sysinfo import tree_cpu

__all__ = ["SATURATED", "CpuMarks"]

#: a share of the held core used at 0.5x from which the run is flagged: a server that keeps
#: up with half its capacity has time to spare
SATURATED = 0.9


class CpuMarks:
    """The server's CPU seconds at the offsets (s from the run's start) of :meth:`events`."""

    def __init__(self, pid: int, offsets: list[float]) -> None:
        self.pid = pid
        self.offsets = offsets
        self.seen: dict[float, float] = {}

    def events(self) -> list[tuple[float, Callable[[], None]]]:
        """What ``openloop.run`` calls at each offset."""
        return [(offset, lambda at=offset: self._mark(at)) for offset in self.offsets]

    def _mark(self, offset: float) -> None:
        self.seen[offset] = tree_cpu(self.pid)

    def between(self, start: float, end: float) -> float | None:
        if start not in self.seen or end not in self.seen:
            return None
        return self.seen[end] - self.seen[start]

    def note(
        self,
        row: Row,
        half: tuple[float, float],
        light: tuple[float, float, list[Outcome]],
        flood: tuple[float, float, list[Outcome]],
        share: float,
        connections: int | None,
    ) -> None:
        """``half``: the 0.5x phase's (start, end); ``light``, ``flood``: the 1x and 4x
        phases' (start, end, outcomes); ``share``: of a core."""
        half_cpu = self.between(*half)
        light_cpu, flood_cpu = self.between(*light[:2]), self.between(*flood[:2])
        served_light = sum(o.status == 200 for o in light[2])
        if half_cpu is None or light_cpu is None or flood_cpu is None or not served_light:
            row.note("server CPU", "not measured")
            return

        def used(cpu: float, phase: tuple[float, ...]) -> str:
            return f"{cpu / ((phase[1] - phase[0]) * share):.0%} of its share used"

        per_served = light_cpu / served_light
        outcomes = flood[2]
        served = sum(o.status == 200 for o in outcomes)
        refused = sum(o.status in (429, 503) for o in outcomes)
        answered = served + refused
        text = (
            f"0.5x: {used(half_cpu, half)}; 1x: {used(light_cpu, light[:2])}, "
            f"{per_served * 1e6:,.0f} µs per answer ({served_light:,} served); 4x: "
            f"{used(flood_cpu, flood[:2])}, "
            + (f"{flood_cpu / answered * 1e6:,.0f} µs per answer" if answered else "no answer")
        )
        if refused:
            rest = flood_cpu - served * per_served
            text += (
                "; what the served answers leave at the 1x cost (refusals, new connections, "
                f"work for clients that had gone): {max(rest, 0.0) / flood_cpu:.0%}, "
                f"{max(rest, 0.0) / refused * 1e6:,.0f} µs per refusal"
            )
        if connections is not None:
            text += f"; {connections:,} connections opened by the 4x stream"
        row.note("server CPU (process tree, /proc)", text)
        half_share = half_cpu / ((half[1] - half[0]) * share)
        if half_share >= SATURATED:
            row.note(
                "warning",
                f"the server used {half_share:.0%} of its share at 0.5x: the capacity (closed "
                "loop) overstates what it serves open loop, so the flood offered more than 4x "
                "of that, and it began with a backlog",
            )
