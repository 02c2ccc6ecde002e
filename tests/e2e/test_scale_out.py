"""Two modelgate processes sharing PostgreSQL and Redis, as replicas behind a balancer: a
tenant's limit holds across both, and a revoked key stops working on both."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis

from tests.conftest import FIXTURE_MODELS
from tests.e2e.conftest import RunningServer, start_server, stop_server

ADMIN_DSN = os.environ.get(
    "MODELGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("MODELGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
BURST = 100


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


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "modelgate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


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
    first = start_server(FIXTURE_MODELS, tmp_path / "a", env=shared_env)
    second = None
    try:
        second = start_server(FIXTURE_MODELS, tmp_path / "b", env=shared_env)
        # A plan whose bucket refills one request per 100 s: the test sees the burst only.
        _cli(shared_env, "plans", "create", "shared", "--rps", "0.01", "--burst", str(BURST))
        created = _cli(shared_env, "tenants", "create", "acme", "--plan", "shared")
        tenant = created.split()[-1]
        output = _cli(shared_env, "keys", "create", "--tenant", tenant, "--name", "load")
        key_id = next(w for w in output.split() if w.startswith("key_"))
        key = output.split()[-1]  # the key itself is printed last, alone on its line
        statuses = asyncio.run(_fire([first, second], key, 3 * BURST))
        admitted = statuses.count(200)
        assert set(statuses) <= {200, 429}
        assert abs(admitted - BURST) <= BURST * 0.05, f"admitted {admitted} of a limit {BURST}"
        _cli(shared_env, "keys", "revoke", key_id)
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
