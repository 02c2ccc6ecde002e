"""Two modelgate processes sharing PostgreSQL and Redis, as replicas behind a balancer: a
tenant's limit and its daily quota hold across both, a revoked key stops working on both,
the usage of both adds up after a clean shutdown, and each quota alert is sent once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis

from tests.conftest import FIXTURE_MODELS, REDIS_URL
from tests.e2e.conftest import RunningServer, run_cli, start_server, stop_server

ADMIN_DSN = os.environ.get(
    "MODELGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
BURST = 200


def _admin_sql(statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(ADMIN_DSN, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture
def shared_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    name = f"modelgate_e2e_{secrets.token_hex(6)}"
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    _admin_sql(f'CREATE DATABASE "{name}"')
    base = ADMIN_DSN.rsplit("/", 1)[0]
    env = {
        "MODELGATE_AUTH": "required",
        "MODELGATE_ADMIN_KEY": secrets.token_urlsafe(24),
        "MODELGATE_DATABASE_URL": f"{base}/{name}",
        "MODELGATE_REDIS_URL": REDIS_URL,
        "MODELGATE_REDIS_KEY_PREFIX": prefix,
        "MODELGATE_KEY_CACHE_SECONDS": "1",
        "MODELGATE_DATA_DIR": str(tmp_path / "cli-data"),
    }
    try:
        yield env
    finally:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()
        _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _fire(servers: list[RunningServer], key: str, total: int) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(i: int) -> int:
            url = f"{servers[i % len(servers)].url}/v2/models/doubler/infer"
            return (await client.post(url, json=ROW, headers=headers)).status_code

        return await asyncio.gather(*(one(i) for i in range(total)))


def test_limits_and_revocation_hold_across_two_replicas(
    shared_env: dict[str, str], tmp_path: Path
) -> None:
    # Leases of min(1% of the burst, 60 s of refill) = 2 tokens: each replica spends them
    # locally, one Redis call per lease (docs/scale-out.md, "Limits across replicas"); the
    # stated bound, 2 replicas x 1.5 x 2 tokens, is 3% of the burst.
    env = {**shared_env, "MODELGATE_LIMIT_LEASE_MS": "60000"}
    first = start_server(FIXTURE_MODELS, tmp_path / "a", env=env)
    second = None
    try:
        second = start_server(FIXTURE_MODELS, tmp_path / "b", env=env)
        # A plan whose bucket refills one request per 20 s: the test sees about the burst.
        run_cli(shared_env, "plans", "create", "shared", "--rps", "0.05", "--burst", str(BURST))
        created = run_cli(shared_env, "tenants", "create", "acme", "--plan", "shared")
        tenant = created.split()[-1]
        output = run_cli(shared_env, "keys", "create", "--tenant", tenant, "--name", "load")
        key_id = next(w for w in output.split() if w.startswith("key_"))
        key = output.split()[-1]  # the key itself is printed last, alone on its line
        statuses = asyncio.run(_fire([first, second], key, 3 * BURST))
        admitted = statuses.count(200)
        assert set(statuses) <= {200, 429}
        assert abs(admitted - BURST) <= BURST * 0.05, f"admitted {admitted} of a limit {BURST}"
        run_cli(shared_env, "keys", "revoke", key_id)
        time.sleep(1.5)  # MODELGATE_KEY_CACHE_SECONDS=1 on both replicas
        for server in (first, second):
            response = httpx.post(
                f"{server.url}/v2/models/doubler/infer",
                json=ROW,
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 401, response.text
    finally:
        assert stop_server(first) == 0
        if second is not None:
            assert stop_server(second) == 0


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[list[tuple[dict[str, str], bytes]], str]]:
    """A real HTTP server on loopback that records every POST."""
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield received, f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()
    server.server_close()


QUOTA = 60


def test_a_daily_quota_usage_and_alerts_across_two_replicas(
    shared_env: dict[str, str],
    webhook_receiver: tuple[list[tuple[dict[str, str], bytes]], str],
    tmp_path: Path,
) -> None:
    received, hook_url = webhook_receiver
    env = {
        **shared_env,
        "MODELGATE_QUOTA_WEBHOOK_URL": hook_url,
        "MODELGATE_WEBHOOK_SECRET": "hook-secret",
        "MODELGATE_USAGE_FLUSH_SECONDS": "0.2",
    }
    run_cli(env, "plans", "create", "daily", "--requests-per-day", str(QUOTA))
    tenant = run_cli(env, "tenants", "create", "initech", "--plan", "daily").split()[-1]
    output = run_cli(
        env, "keys", "create", "--tenant", tenant, "--scope", "infer", "--scope", "usage:read"
    )
    key_id = next(w for w in output.split() if w.startswith("key_"))
    key = output.split()[-1]
    first = start_server(FIXTURE_MODELS, tmp_path / "a", env=env)
    second = None
    try:
        second = start_server(FIXTURE_MODELS, tmp_path / "b", env=env)
        statuses = asyncio.run(_fire([first, second], key, 2 * QUOTA + 30))
        # Quotas are charged atomically in Redis: exactly the quota, not "about" it.
        assert statuses.count(200) == QUOTA
        assert set(statuses) == {200, 429}
        refused = httpx.post(
            f"{second.url}/v2/models/doubler/infer",
            json=ROW,
            headers={"Authorization": f"Bearer {key}"},
        )
        assert refused.status_code == 429 and "quota exceeded" in refused.json()["error"]
        assert 0 < int(refused.headers["retry-after"]) <= 86400
        quotas = httpx.get(
            f"{first.url}/admin/tenants/{tenant}/quotas",
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        assert [(q["quota"], q["used"], q["remaining"]) for q in quotas] == [
            ("requests_per_day", QUOTA, 0)
        ]
    finally:
        assert stop_server(first) == 0
        if second is not None:
            assert stop_server(second) == 0

    # Both replicas wrote their usage on the way out: every request is accounted for.
    report = json.loads(
        run_cli(env, "usage", "report", "--tenant", tenant, "--by", "key", "--json")
    )
    (row,) = report["rows"]
    assert row["key_id"] == key_id
    assert row["requests"] == 2 * QUOTA + 30 + 1
    assert row["errors"] == QUOTA + 30 + 1 and row["rows"] == QUOTA
    listed = run_cli(env, "keys", "list", "--tenant", tenant)
    assert key_id in listed and time.strftime("%Y-%m-%d", time.gmtime()) in listed

    # One alert per crossing (80% and 100%), whichever replica saw it, signed.
    deadline = time.monotonic() + 5
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    events = [json.loads(body) for _, body in received]
    assert sorted(e["threshold_percent"] for e in events) == [80, 100]
    assert {(e["tenant_id"], e["quota"], e["limit"]) for e in events} == {
        (tenant, "requests_per_day", QUOTA)
    }
    for headers, body in received:
        stamp, mac = headers["x-modelgate-signature"].split(",")
        signed = stamp.removeprefix("t=").encode() + b"." + body
        assert mac == "v1=" + hmac.new(b"hook-secret", signed, hashlib.sha256).hexdigest()
