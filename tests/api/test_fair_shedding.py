"""Fair shedding on a saturated server (issue 15), through a real server and real keys: while
the queueing delay is between the target and twice it, the tenant that took most of the
recent admissions is shed (503 with Retry-After, before its request is read) and a tenant
within its fair share is still served; the metrics say who was shed and each tenant's share.

The delay is fed to the controller by the test (the loop-lag sampler paused), so the
controller stays in that band however loaded the test machine is; the lag signal itself is
tested in test_queue_shedding.py. The clients run in a thread beside the server's loop.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from modelgate.server import Server
from tests.api.conftest import running_server
from tests.api.test_queue_shedding import INFER, ROW, _controller

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + secrets.token_hex(12)
TARGET_MS = 30


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(
        tmp_path_factory.mktemp("fair"),
        auth="required",
        admin_key=SecretStr(ADMIN),
        shed_queue_target_ms=TARGET_MS,
        # every request the rules pick is shed: the gradual law (pie, the default) would
        # first draw a fraction of them (tests/unit/admission/test_gradual_shedding.py)
        shed_queue_law="onoff",
        shed_queue_interval_ms=100,
        shed_queue_unready_seconds=5,
        shed_queue_share_half_life_seconds=30,  # the shares of the warm-up hold all test long
    ) as running:
        yield running


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _keys(url: str) -> dict[str, str]:
    """Two tenants on one plan (equal weights), a key each."""
    async with httpx.AsyncClient(base_url=url, headers=_as(ADMIN)) as admin:
        plan = await admin.post("/admin/plans", json={"name": "std", "requests_per_second": 500})
        assert plan.status_code == 201, plan.text
        keys = {}
        for name in ("heavy", "light"):
            tenant = await admin.post("/admin/tenants", json={"name": name, "plan": "std"})
            assert tenant.status_code == 201, tenant.text
            key = await admin.post(
                f"/admin/tenants/{tenant.json()['id']}/keys",
                json={"name": "k", "scopes": ["infer"]},
            )
            assert key.status_code == 201, key.text
            keys[name] = key.json()["secret"]
        return keys


async def test_the_tenant_over_its_share_is_shed_and_the_one_within_it_is_served(
    server: Server,
) -> None:
    url = f"http://127.0.0.1:{server.http_port}"
    keys = await _keys(url)
    controller = _controller(server)

    def warm_up() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(20):
                assert client.post(INFER, json=ROW, headers=_as(keys["heavy"])).status_code == 200
            assert client.post(INFER, json=ROW, headers=_as(keys["light"])).status_code == 200

    await asyncio.to_thread(warm_up)
    shares = controller.shares.shares()
    assert shares[_tenant(controller, "heavy")] > 0.9

    assert server.components is not None and server.components.loop_lag is not None
    sampler = server.components.loop_lag
    await sampler.close()  # the test gives the delay samples now
    try:
        for _ in range(10):  # 1.5x the target for 200 ms: shedding, not severe
            controller.observe(1.5 * TARGET_MS / 1000)
            await asyncio.sleep(0.02)
        assert controller.shedding and not controller.severe

        def saturated() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            with httpx.Client(base_url=url, timeout=10) as client:
                heavy = client.post(INFER, json=ROW, headers=_as(keys["heavy"]))
                seen["heavy"] = (heavy.status_code, heavy.headers.get("retry-after"))
                light = client.post(INFER, json=ROW, headers=_as(keys["light"]))
                seen["light"] = light.status_code
            return seen

        seen = await asyncio.to_thread(saturated)
    finally:
        controller.observe(0.0)
        await sampler.start()

    assert seen["heavy"] == (503, "1")
    assert seen["light"] == 200

    async with httpx.AsyncClient(base_url=url, headers=_as(ADMIN)) as client:
        text = (await client.get("/metrics")).text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    shed_by_tenant = {
        s.labels["tenant"]: s.value
        for s in samples
        if s.name == "modelgate_refused_requests_total" and s.labels["reason"] == "queue_delay"
    }
    assert shed_by_tenant == {_tenant(controller, "heavy"): 1.0}
    fair = {s.labels["tenant"]: s.value for s in samples if s.name == "modelgate_tenant_fair_share"}
    assert sorted(fair.values()) == [0.5, 0.5]


def _tenant(controller: Any, name: str) -> str:
    """The tenant id of ``name``: the one that took 20 admissions (heavy) or 1 (light)."""
    shares = controller.shares.shares()
    ordered = sorted(shares, key=shares.__getitem__)
    return str(ordered[-1] if name == "heavy" else ordered[0])
