"""Row 5: a known tenant key through a 6 s PostgreSQL outage, as tests/e2e/test_key_outage.py
makes one: the server reaches a database of the run's own on the machine's PostgreSQL through
a TCP fault proxy (tests/faultproxy.py), which refuses and resets every connection for 6 s.
The PostgreSQL service itself is never touched (others use it). The key's cache entry
(``MODELGATE_KEY_CACHE_SECONDS`` 5) expires during the outage; 50 requests/s with that key
from 2 s before to 2 s after it, every answer counted."""

from __future__ import annotations

import asyncio
import os
import secrets

from bench import openloop
from bench.flood.keys import ROOMY, key_for
from bench.flood.measure import HOST, Row, infer_request, latency_ms, statuses
from bench.suites.context import SERVER_CPU, Ctx
from bench.suites.servers import start_modelgate
from tests.faultproxy import FaultProxy  # the fault tests' proxy: one way to cut a database

ADMIN_DSN = os.environ.get(
    "MODELGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RATE = 50.0
BEFORE_S = 2.0
OUTAGE_S = 6.0
AFTER_S = 2.0


async def _admin_sql(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def outage(ctx: Ctx) -> Row:
    row = Row(
        "outage", f"a known tenant key during a {OUTAGE_S:g} s PostgreSQL outage", "200 throughout"
    )
    name = f"modelgate_flood_{secrets.token_hex(6)}"
    asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    base = ADMIN_DSN.rsplit("/", 1)[0]
    host, port = base.rsplit("@", 1)[1].split(":")
    proxy = FaultProxy(host, int(port))
    try:
        through = f"{base.replace(f'{host}:{port}', f'127.0.0.1:{proxy.port}')}/{name}"
        env = {"MODELGATE_DATABASE_URL": through, "MODELGATE_KEY_CACHE_SECONDS": "5"}
        server = start_modelgate(ctx, "outage", SERVER_CPU, env=env)
        try:
            key = key_for(f"http://{HOST}:{server.http_port}", ROOMY, "flood-outage")
            stream = openloop.Stream(
                "key",
                infer_request(server, key),
                RATE,
                BEFORE_S + OUTAGE_S + AFTER_S,
                connections=8,
            )
            events = [
                (BEFORE_S, lambda: proxy.set("refuse")),
                (BEFORE_S + OUTAGE_S, lambda: proxy.set("pass")),
            ]
            run = openloop.run(HOST, server.http_port, [stream], events)
        finally:
            proxy.set("pass")
            server.stop()
    finally:
        proxy.close()
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    outcomes = run.outcomes["key"]
    during = [o for o in outcomes if BEFORE_S <= o.due < BEFORE_S + OUTAGE_S]
    failed = sum(o.status != 200 for o in outcomes)
    slowest = max((o.latency for o in during if o.latency is not None), default=None)
    in_outage = sum(o.status != 200 for o in during)
    row.measured = f"{failed} of {len(outcomes)} non-200 ({in_outage} in the outage)"
    row.passed = failed == 0
    row.note("answers", statuses(outcomes))
    row.note("slowest answer in the outage", latency_ms(slowest))
    return row
