"""The attack suite's ``world``: one server per test module and backend.

- ``sqlite``: tenants, keys, usage and the audit trail in SQLite in the server's data
  folder; rate limits, quotas and abuse counts in memory.
- ``postgres+redis``: a PostgreSQL database of its own (``modelgate_test_<hex>``, created
  and dropped as the contract tests' are, see tests/contract/conftest.py) and Redis
  (``MODELGATE_TEST_REDIS_URL``) under a key prefix of its own, whose keys are deleted
  afterwards. Both servers are required: their absence is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
import redis
import yaml
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from tritonclient.grpc import service_pb2_grpc

from modelgate.server import Server
from modelgate.settings import Settings
from tests.api.attacks.world import (
    ADMIN,
    AUDIENCE,
    ISSUER,
    SIGNING_KEY,
    World,
    credential_for,
    populate,
    tokens,
)
from tests.conftest import FIXTURE_MODELS, REDIS_URL
from tests.contract.conftest import drop_postgres_database, new_postgres_database


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["sqlite", "postgres+redis"])
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("attacks")
    repository = root / "models"
    shutil.copytree(FIXTURE_MODELS, repository)
    for model, tenant in (("acme-only", "ten_acme"), ("globex-only", "ten_globex")):
        shutil.copytree(repository / "doubler", repository / model)
        manifest = yaml.safe_load((repository / model / "model.yaml").read_text())
        manifest["tenants"] = [tenant]
        (repository / model / "model.yaml").write_text(yaml.safe_dump(manifest))
    backend: dict[str, Any] = {}
    database = prefix = None
    if request.param == "postgres+redis":
        database = new_postgres_database()
        prefix = f"mgtest:{secrets.token_hex(6)}:"
        backend = {
            "database_url": SecretStr(database),
            "redis_url": SecretStr(REDIS_URL),
            "redis_key_prefix": prefix,
        }
    try:
        settings = Settings(
            model_repository=repository,
            data_dir=root / "data",
            http_port=0,
            grpc_port=0,
            log_level="debug",  # the log test reads everything, uvicorn's debug lines included
            auth="required",
            admin_key=SecretStr(ADMIN),
            key_cache_seconds=0,  # every credential is looked up: a revocation holds at once
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            jwt_signing_key=SecretStr(SIGNING_KEY),
            # Hundreds of refused credentials and failing requests from 127.0.0.1 and a few
            # keys would get the address and the keys slowed, then blocked (429) halfway
            # through the tables; the log test lowers these for one other address and one
            # key of its own.
            abuse_slow_after=10_000,
            abuse_block_after=10_000,
            abuse_auth_failures_per_ip=10_000,
            # the tables and the fuzzers send hundreds of admin requests per tenant key: the
            # admin rate limit and the audit budget would answer 429 halfway (they are
            # tested in tests/api/test_admin_guard.py)
            admin_rate_limit=0,
            fairness_audits_per_minute=0,
            # the log test picks its clients' addresses with X-Forwarded-For
            forwarded_allow_ips="127.0.0.1",
            # payload logging configured, so its consent and data-subject routes answer
            payload_keys={"k1": SecretStr(base64.b64encode(secrets.token_bytes(32)).decode())},
            payload_pseudonym_key=SecretStr(secrets.token_urlsafe(32)),
            **backend,
        )
        server = Server(settings)
        task = asyncio.create_task(server.serve())
        started = asyncio.create_task(server.started.wait())
        await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            started.cancel()
            task.result()
        try:
            async with (
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{server.http_port}",
                    timeout=30,
                ) as http,
                grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
            ):
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                world = World(server, http, stub, {"admin": ADMIN})
                await populate(world)
                if database is not None:
                    # The backend is the one asked for: the store is this database, and a
                    # refused credential is counted (awaited before the answer) in Redis.
                    assert server.components is not None
                    assert server.components.state is not None
                    url = make_url(server.components.state.url)
                    assert url.drivername.startswith("postgresql"), url.drivername
                    assert url.database == make_url(database).database, url.database
                    ((header, value),) = credential_for(world, "unknown-key")
                    refused = await http.get("/v2/models/doubler", headers={header: value})
                    assert refused.status_code == 401, refused.text
                    with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
                        assert list(client.scan_iter(match=f"{prefix}abuse:*", count=1000))
                world.secrets |= tokens()
                yield world
        finally:
            server.request_stop()
            await asyncio.wait_for(task, 30)
    finally:
        if database is not None:
            drop_postgres_database(database)
        if prefix is not None:
            with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
                keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                if keys:
                    client.delete(*keys)
