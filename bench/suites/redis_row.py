"""credit-risk over REST with limits, quotas and abuse strikes in Redis (``MODELGATE_REDIS_URL``
set, as replicas run), against the minimal FastAPI app and, for what Redis costs, the same
modelgate keeping them in memory (issue 11: >= 1.8x the minimal app). The Redis is
``--redis URL`` or the local one; the run's keys live under a prefix of its own
(``bench/redis_scratch.py``), removed at the end."""

from __future__ import annotations

import dataclasses

from bench import workloads
from bench.procs import Server
from bench.suites.context import LOAD_CPU, SERVER_CPU, Check, Ctx, Result
from bench.suites.credit_load import (
    COLUMNS,
    credit_body,
    infer_url,
    row_cells,
    script_for,
    served_by,
    summary,
)
from bench.suites.measuring import alternate, authorization, describe, post
from bench.suites.servers import same_credit_answer, start_fastapi, start_modelgate

#: issue 11's target for this row: modelgate with Redis / the minimal app
TARGET = 1.8
REDIS, MEMORY, FASTAPI = "modelgate, limits in Redis", "modelgate, limits in memory", "FastAPI"


def reachable(url: str) -> None:
    """Raise a clear error when no Redis answers at ``url`` (before any server starts)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"no Redis at {url} ({exc}); name one with --redis URL") from exc
    finally:
        client.close()


def bench_redis(ctx: Ctx) -> Result:
    if ctx.redis_url is None:
        raise RuntimeError("the redis row needs a Redis URL")
    reachable(ctx.redis_url)
    files = workloads.model_files(ctx.models, workloads.CREDIT)
    result = Result(
        "redis",
        "credit-risk over REST c=64: limits and quotas in Redis vs the minimal FastAPI app",
        ["server", *COLUMNS],
    )
    body = credit_body(workloads.CREDIT_ROW)
    servers: dict[str, Server] = {}
    try:
        servers[REDIS] = start_modelgate(ctx, "modelgate-redis", SERVER_CPU)
        memory = dataclasses.replace(ctx, redis_url=None)
        servers[MEMORY] = start_modelgate(memory, "modelgate-memory", SERVER_CPU)
        servers[FASTAPI] = start_fastapi(ctx, files, SERVER_CPU)
        for name in (REDIS, MEMORY):
            same_credit_answer(
                post(infer_url(servers[name]), body, authorization(servers[name])),
                post(infer_url(servers[FASTAPI]), body),
            )
        scripts = {
            name: script_for(server, ctx.work / f"redis-row-{index}.lua", body)
            for index, (name, server) in enumerate(servers.items())
        }
        for name, server in servers.items():  # warm-up, not recorded
            served_by(server, [server], scripts[name], 64, 2, LOAD_CPU)()
        runs = alternate(
            ctx,
            [
                (name, served_by(server, [server], scripts[name], 64, ctx.duration, LOAD_CPU))
                for name, server in servers.items()
            ],
            describe,
        )
    finally:
        for server in servers.values():
            server.stop()
    for name, loads in runs.items():
        result.rows.append([name, *row_cells(loads)])
    med = {name: summary(loads) for name, loads in runs.items()}
    ratio = med[REDIS]["rps"] / med[FASTAPI]["rps"]
    result.checks += [
        Check(
            "REST c=64 throughput, modelgate with Redis / FastAPI",
            f"{ratio:.2f}x",
            f">= {TARGET}",
            ratio >= TARGET,
        ),
        Check(
            "REST c=64 throughput, limits in Redis / in memory",
            f"{med[REDIS]['rps'] / med[MEMORY]['rps']:.2f}x (CPU/req "
            f"{med[REDIS]['cpu']:.0f} vs {med[MEMORY]['cpu']:.0f} µs)",
            "(info)",
            None,
        ),
    ]
    result.notes += [
        f"Servers pinned to CPU {SERVER_CPU}, wrk (`-t1 -c64`) to CPU {LOAD_CPU}; "
        f"{ctx.rounds} alternating rounds of {ctx.duration:g} s after a 2 s warm-up of each. "
        f"Redis: {ctx.redis_url}, not pinned; its own CPU is not in server CPU/req.",
        "Both modelgate servers run the demo models as `make run` builds them; only "
        "MODELGATE_REDIS_URL (and a key prefix of the run's own) differs.",
    ]
    return result
