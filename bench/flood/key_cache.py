"""Row 4: a tenant key's p99 against the bootstrap key's at 1,500 requests/s (open loop),
long enough for the tenant key's cache entry (``MODELGATE_KEY_CACHE_SECONDS`` 5 on this
server) to expire twice: a stampede of look-ups at expiry shows as a p99 far above the
bootstrap key's, which never touches the cache.

The two keys run one after the other, twice, in the order bootstrap, tenant, tenant,
bootstrap (a drift of the machine's speed weighs on both alike), and each key's figure is
the mean of its two runs' p99: one 11 s run each left the ratio to whatever else the machine
did in those seconds."""

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
    runs: dict[str, list[float | None]] = {"bootstrap": [], "tenant": []}
    keys = {"bootstrap": AUTHORIZATION, "tenant": tenant_key}
    for attempt, name in enumerate(("bootstrap", "tenant", "tenant", "bootstrap"), 1):
        stream = openloop.Stream(
            name, infer_request(server, keys[name]), RATE, SECONDS, connections=CONNECTIONS
        )
        wait_idle(server)
        run = openloop.run(HOST, server.http_port, [stream])
        outcomes = run.outcomes[name]
        runs[name].append(p99(outcomes))
        slowest = max((o.latency for o in outcomes if o.latency is not None), default=None)
        label = f"{name} key, run {attempt}"
        row.note(
            label,
            f"p99 {latency_ms(runs[name][-1])}, slowest {latency_ms(slowest)}; "
            f"{statuses(outcomes)}",
        )
        lag_note(row, run, f"generator lag, {label}")
        row.note(f"{label}, slowest seconds", _worst_seconds(outcomes))
        if any(o.status != 200 for o in outcomes):
            row.passed = False
            if name == "bootstrap":
                row.note("warning", "the server did not keep up with 1,500 req/s: no baseline")
    tenant, bootstrap = (_mean(runs[name]) for name in ("tenant", "bootstrap"))
    ratio = tenant / bootstrap if tenant and bootstrap else None
    row.measured = (
        f"p99 tenant {latency_ms(tenant)}, bootstrap {latency_ms(bootstrap)} (each the mean of "
        f"two runs): {ratio_text(ratio)}"
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


def _mean(values: list[float | None]) -> float | None:
    """The mean of the runs' p99s; None when a run has none (no requests)."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)
