"""``stalls``: how long the event loop is held at a time while it serves a steady stream, every
background writer flushing as in a server (the feedback recorder's predictions, the usage
sums, the request log's thread).

Credit-risk requests with a tenant key arrive at ``RATE`` a second, open loop, each in its own
task (``RestApp`` called in-process, as uvicorn calls it), and beside them a probe sleeps
1 ms at a time and notes how long each sleep really took: a gap far above 1 ms is a stretch
in which the loop ran something else without letting the probe (or a request) in, a flush's
work or another thread holding the GIL. A request arriving then waits that long; on a server
held to a fraction of a core each millisecond of CPU is several of wall time, and the
shedding controller reads the wait as queueing (false shedding).

Run it once per tree to compare two trees (``PYTHONPATH=<tree>/src``), and with
``MODELGATE_FEEDBACK_FLUSH_SECONDS=60`` for the stream without the feedback writer's
flushes (the floor).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.inprocess.asgi import Counted, post_scope
from bench.workloads import CREDIT, credit_json

RATE = 1000.0
PROBE_S = 0.001
#: a gap this long is counted as a stall
STALL_S = 0.005


async def measure_stalls(components: Any, secret: str, seconds: float) -> dict[str, float]:
    """Gap percentiles in ms, stalls (gaps over ``STALL_S``) per second, CPU per request."""
    app = components.rest_app
    body = credit_json()
    scope = post_scope(f"/v2/models/{CREDIT}/infer", body, f"Bearer {secret}")
    channel = Counted(body)
    receive, send, statuses = channel.receive, channel.send, channel.statuses

    gaps: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(PROBE_S)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tasks: set[asyncio.Task[Any]] = set()
    watcher = asyncio.create_task(probe())
    cpu, start = time.process_time(), time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) < start + seconds:
        due = start + sent / RATE
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(app(dict(scope), receive, send))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu
    done.set()
    await watcher
    if set(statuses) != {200}:
        raise RuntimeError(f"stalls: not every request was served: {statuses}")
    gaps.sort()

    def at(q: float) -> float:
        return round(gaps[min(len(gaps) - 1, int(len(gaps) * q))] * 1000, 2)

    return {
        "requests": sent,
        "cpu_us_per_request": round(cpu / sent * 1e6, 1),
        "gap_p50_ms": at(0.5),
        "gap_p99_ms": at(0.99),
        "gap_p999_ms": at(0.999),
        "gap_max_ms": round(gaps[-1] * 1000, 2),
        "stalls_per_s": round(sum(g > STALL_S for g in gaps) / seconds, 2),
    }
