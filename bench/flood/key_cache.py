"""Row 4: a tenant key's p99 against the bootstrap key's at 1,500 requests/s (open loop),
long enough for the tenant key's cache entry (``MODELGATE_KEY_CACHE_SECONDS`` 5 on this
server) to expire twice: a stampede of look-ups at expiry shows as a p99 far above the
bootstrap key's, which never touches the cache."""

from __future__ import annotations

from bench import openloop
from bench.flood.measure import (
    HOST,
    Row,
    infer_request,
    lag_note,
    latency_ms,
    p99,
    ratio_text,
    statuses,
    wait_idle,
)
from bench.openloop import Outcome
from bench.procs import Server
from bench.workloads import AUTHORIZATION

RATE = 1500.0
SECONDS = 11.0
CONNECTIONS = 256


def key_cache(server: Server, tenant_key: str) -> Row:
    row = Row(
        "key-cache",
        "tenant-key p99 / bootstrap-key p99 at 1,500 req/s (key cache 5 s)",
        "<= 1.2x, all 200",
    )
    figures: dict[str, float | None] = {}
    for name, key in (("bootstrap", AUTHORIZATION), ("tenant", tenant_key)):
        stream = openloop.Stream(
            name, infer_request(server, key), RATE, SECONDS, connections=CONNECTIONS
        )
        wait_idle(server)
        run = openloop.run(HOST, server.http_port, [stream])
        outcomes = run.outcomes[name]
        figures[name] = p99(outcomes)
        slowest = max((o.latency for o in outcomes if o.latency is not None), default=None)
        row.note(
            f"{name} key",
            f"p99 {latency_ms(figures[name])}, slowest {latency_ms(slowest)}; {statuses(outcomes)}",
        )
        lag_note(row, run, f"generator lag, {name} key")
        row.note(f"{name} key, slowest seconds", _worst_seconds(outcomes))
        if any(o.status != 200 for o in outcomes):
            row.passed = False
            if name == "bootstrap":
                row.note("warning", "the server did not keep up with 1,500 req/s: no baseline")
    tenant, bootstrap = figures["tenant"], figures["bootstrap"]
    ratio = tenant / bootstrap if tenant and bootstrap else None
    row.measured = (
        f"p99 tenant {latency_ms(tenant)}, bootstrap {latency_ms(bootstrap)}: {ratio_text(ratio)}"
    )
    if row.passed is None:
        row.passed = ratio is not None and ratio <= 1.2
    return row


def _worst_seconds(outcomes: list[Outcome], count: int = 3) -> str:
    """The seconds of the run with the highest p99 (a stampede at each cache expiry shows
    as slow seconds ``MODELGATE_KEY_CACHE_SECONDS`` apart)."""
    seconds = [(p99(bucket), start) for start, bucket in openloop.windows(outcomes, 0, SECONDS, 1)]
    worst = sorted((s for s in seconds if s[0] is not None), reverse=True)[:count]
    return ", ".join(
        f"{start:g}-{start + 1:g} s: p99 {latency_ms(value)}" for value, start in worst
    )
