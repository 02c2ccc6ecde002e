"""Row 1: tenants B and C at 30 requests/s each (open loop), alone and then beside tenant A
flooding flat out with its own key (wrk, 32 connections, closed loop); all three on the same
50 requests/s plan, so A is refused almost always and B and C never.

C's requests are due half a period after B's, so that B and C do not arrive in pairs (their
600 latencies are then 600 samples, not 300 pairs, and neither waits behind the other). The
server's CPU while A floods, less its CPU alone over the same time, is what A's flood cost
it; the notes give it per answer A got."""

from __future__ import annotations

import threading
import time

from bench import loadgen, openloop
from bench.flood.keys import FAIR, key_for
from bench.flood.measure import (
    HOST,
    Row,
    infer_request,
    lag_note,
    latency_ms,
    p99,
    ratio_text,
    statuses,
)
from bench.loadgen import Load
from bench.procs import Server
from bench.suites.context import LOAD_CPU, Ctx
from bench.sysinfo import tree_cpu
from bench.workloads import credit_json

RATE = 30.0
SECONDS = 10.0
FLOOD_CONNECTIONS = 32
#: the flood starts this long before B and C, and ends after them
RAMP = 1.0


def fairness(ctx: Ctx, server: Server) -> Row:
    row = Row(
        "fairness",
        "tenants B, C at 30 req/s: p99 beside A's flood / alone (plan 50 req/s for all)",
        "<= 1.5x (goal 1.1x), 0 failed",
    )
    base = f"http://{HOST}:{server.http_port}"
    a, b, c = (key_for(base, FAIR, f"flood-{name}") for name in "abc")
    streams = [
        openloop.Stream(name, infer_request(server, key), RATE, SECONDS, start, connections=16)
        for name, key, start in (("B", b, 0.0), ("C", c, 0.5 / RATE))
    ]
    cpu = tree_cpu(server.pid)
    alone = openloop.run(HOST, server.http_port, streams)
    cpu_alone = tree_cpu(server.pid) - cpu
    script = loadgen.lua_script(ctx.work / "flood-a.lua", [credit_json()], authorization=a)
    flood: list[Load] = []
    flooding = threading.Thread(
        target=lambda: flood.append(
            loadgen.wrk(
                f"{base}/v2/models/credit-risk/infer",
                script,
                FLOOD_CONNECTIONS,
                SECONDS + 2 * RAMP,
                cpus=LOAD_CPU,
            )
        )
    )
    flooding.start()
    time.sleep(RAMP)
    cpu = tree_cpu(server.pid)
    beside = openloop.run(HOST, server.http_port, streams)
    cpu_beside = tree_cpu(server.pid) - cpu
    flooding.join()

    before = [o for outcomes in alone.outcomes.values() for o in outcomes]
    during = [o for outcomes in beside.outcomes.values() for o in outcomes]
    p99_alone, p99_beside = p99(before), p99(during)
    ratio = p99_beside / p99_alone if p99_alone and p99_beside else None
    failed = sum(o.status != 200 for o in during)
    row.measured = (
        f"p99 {latency_ms(p99_alone)} alone, {latency_ms(p99_beside)} beside the flood: "
        f"{ratio_text(ratio)}; {failed} of {len(during)} failed"
    )
    row.passed = ratio is not None and ratio <= 1.5 and failed == 0
    for label, run in (("alone", alone), ("beside", beside)):
        for name, outcomes in run.outcomes.items():
            row.note(f"{name} {label}", f"p99 {latency_ms(p99(outcomes))}; {statuses(outcomes)}")
        lag_note(row, run, f"generator lag {label}")
    if flood:
        load = flood[0]
        row.note(
            "A (wrk -c32)",
            f"{load.rps:,.0f} answers/s, {load.errors:,} of {load.requests:,} non-2xx or "
            f"socket errors",
        )
        # A's answers while B and C ran (the flood ran RAMP longer on each side)
        during_a = load.rps * SECONDS
        row.note(
            "server CPU: alone, beside A",
            f"{cpu_alone:.2f} s, {cpu_beside:.2f} s: A's flood cost "
            f"{max(cpu_beside - cpu_alone, 0) / SECONDS * 100:.1f}% of a core, "
            f"{max(cpu_beside - cpu_alone, 0) / during_a * 1e6:,.0f} µs per answer A got",
        )
    return row
