"""A job submitted to a server is started by that server's own worker at once, not at its
next poll: the REST app and the running worker on the real SQLite stores, with a poll
interval of a minute, so a job that waited for a poll would fail the test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = {"Authorization": "Bearer pickup-admin-" + "a" * 24}
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
POLL_S = 60.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        model_repository=FIXTURE_MODELS,
        data_dir=tmp_path_factory.mktemp("pickup"),
        admin_key=ADMIN["Authorization"].removeprefix("Bearer "),
        jobs_poll_seconds=POLL_S,
        log_level="warning",
    )
    components: Components = build_components(settings)
    await components.open()
    await components.start()
    assert components.jobs is not None
    components.jobs.start_worker()
    transport = httpx.ASGITransport(app=components.rest_app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await asyncio.sleep(0.2)  # the slots' first claims found nothing: they wait
            yield client
    finally:
        await components.close()


async def _succeeded(client: httpx.AsyncClient, job_id: str) -> float:
    started = time.monotonic()
    async with asyncio.timeout(10.0):
        while True:
            job = (await client.get(f"/v1/jobs/{job_id}", headers=ADMIN)).json()
            if job["status"] == "succeeded":
                return time.monotonic() - started
            await asyncio.sleep(0.02)


async def test_a_submitted_job_starts_without_waiting_for_a_poll(
    server: httpx.AsyncClient,
) -> None:
    for _ in range(2):  # and again once the slots wait once more
        body = {"model": "doubler", "version": "1", "request": ROW}
        response = await server.post("/v1/jobs", json=body, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert await _succeeded(server, response.json()["id"]) < 3.0
