"""The cost of shedding on queueing delay while it does not shed (issue 15).

``python -m bench.overload``: (1) the adapters' check per request, off
(``overload is None``) and on but not shedding (one attribute read more), in ns per
request, and admission's count of each admitted request towards its tenant's fair share
(:meth:`QueueDelay.admitted`, on only), among 100 tenants; (2) the loop-lag sampler's
CPU: the process CPU time of an idle event loop for ``SECONDS`` with and without
:class:`~modelgate.boot.loop_lag.LoopLag`, as a share of one core. Best of ``ROUNDS``
alternating rounds; pin it (``taskset -c 1``) on a shared machine.
"""

from __future__ import annotations

import asyncio
import time
import timeit

from modelgate.boot.loop_lag import LoopLag
from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.overload import QueueDelay

ROUNDS = 7
CHECKS = 2_000_000
SECONDS = 2.0


class _App:
    """What an adapter holds: ``overload``, None when off."""

    def __init__(self, overload: QueueDelay | None) -> None:
        self.overload = overload


def _check(app: _App) -> bool:
    overload = app.overload  # what api/rest/inference.py does per request
    return overload is not None and overload.shedding and overload.refuses(None)


def check_ns(app: _App) -> float:
    best = min(timeit.repeat(lambda: _check(app), number=CHECKS, repeat=ROUNDS))
    return best / CHECKS * 1e9


def count_ns() -> float:
    """What ``Admission.admit`` adds per admitted request while shedding is configured."""
    overload = QueueDelay(target_s=0.05, interval_s=0.5)
    plan = Plan(name="basic", requests_per_second=50.0)
    tenants = [Principal(f"ten_{i}", "key", frozenset(), plan) for i in range(100)]
    for principal in tenants:
        overload.admitted(principal)
    principal = tenants[42]
    best = min(timeit.repeat(lambda: overload.admitted(principal), number=CHECKS, repeat=ROUNDS))
    empty = min(timeit.repeat(lambda: None, number=CHECKS, repeat=ROUNDS))
    return (best - empty) / CHECKS * 1e9


async def _idle(sampled: bool) -> float:
    sampler = LoopLag(QueueDelay(target_s=0.05, interval_s=0.5)) if sampled else None
    if sampler is not None:
        await sampler.start()
    start = time.process_time()
    await asyncio.sleep(SECONDS)
    used = time.process_time() - start
    if sampler is not None:
        await sampler.close()
    return used / SECONDS


def main() -> None:
    off = check_ns(_App(None))
    on = check_ns(_App(QueueDelay(target_s=0.05, interval_s=0.5)))
    print(f"adapter check: off {off:.1f} ns/request, on (not shedding) {on:.1f} ns/request")
    print("  (each includes the call of the timed lambda; the difference is the feature's)")
    print(f"fair-share count per admitted request (on): {count_ns():.1f} ns")
    idle = [asyncio.run(_idle(False)) for _ in range(3)]
    sampled = [asyncio.run(_idle(True)) for _ in range(3)]
    print(
        f"idle loop CPU: without sampler {min(idle) * 100:.3f}% of a core, "
        f"with the 20 ms sampler {min(sampled) * 100:.3f}%"
    )


if __name__ == "__main__":
    main()
