"""How long a call takes: wall time per call, a bootstrap-key and tenant-key pair measured A B B
A, CPU time per call, and the figures of a run in the order measured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

Call = Callable[[], Awaitable[Any]] | Callable[[], Any]


async def per_call(call: Call, seconds: float) -> float:
    """µs per call, over ``seconds`` after a warm-up (awaits the call if it is a coroutine)."""

    async def once() -> None:
        value = call()
        if asyncio.iscoroutine(value):
            await value

    for _ in range(500):
        await once()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            await once()
        count += 200
    return (time.perf_counter() - start) / count * 1e6


async def pair(admin: Call, tenant_call: Call, seconds: float) -> tuple[float, float]:
    """The bootstrap-key and tenant-key figures of one layer, A B B A: the mean of each, so a
    drift of the machine's speed during the four runs weighs on both alike."""
    a1 = await per_call(admin, seconds)
    t1 = await per_call(tenant_call, seconds)
    t2 = await per_call(tenant_call, seconds)
    a2 = await per_call(admin, seconds)
    return (a1 + a2) / 2, (t1 + t2) / 2


class Figures:
    """Figures in the order measured; with a tenant key, each ``both`` adds two."""

    def __init__(self, seconds: float, tenant_key: bool):
        self.seconds = seconds
        self.tenant_key = tenant_key
        self.out: dict[str, float] = {}

    async def one(self, name: str, call: Call, share: float = 1.0, per: int = 1) -> None:
        self.out[name] = await per_call(call, self.seconds * share) / per

    async def both(
        self, name: str, admin: Call, tenant_call: Call | None, share: float = 1.0, per: int = 1
    ) -> None:
        if not self.tenant_key or tenant_call is None:
            await self.one(name, admin, share, per)
            return
        a, t = await pair(admin, tenant_call, self.seconds * share)
        self.out[name] = a / per
        self.out[f"{name}, tenant key"] = t / per


async def cpu_per_call(call: Call, seconds: float) -> tuple[float, float]:
    """(CPU µs, wall µs) per call over ``seconds`` after a warm-up: the process's CPU time,
    every thread's (the model's intra-op threads included)."""

    async def once() -> None:
        value = call()
        if asyncio.iscoroutine(value):
            await value

    for _ in range(500):
        await once()
    count, cpu, start = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            await once()
        count += 200
    return (
        (time.process_time() - cpu) / count * 1e6,
        (time.perf_counter() - start) / count * 1e6,
    )
