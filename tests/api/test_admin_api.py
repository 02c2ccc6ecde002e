"""The admin API: plans, tenants, keys and audit over HTTP, its OpenAPI document and its
offline docs page; credentials and cross-tenant access refused; bodies cannot smuggle
privileges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "z" * 24
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=FIXTURE_MODELS,
            data_dir=tmp_path_factory.mktemp("admin"),
            auth="required",
            admin_key=ADMIN,
        )
    )
    await components.open()
    await components.start()
    yield components
    await components.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(app: Components) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tenants(client: httpx.AsyncClient) -> dict[str, Any]:
    """Two tenants, each with a key that may manage its own keys and read its audit trail."""
    response = await client.post(
        "/admin/plans", json={"name": "std", "requests_per_second": 50}, headers=_as(ADMIN)
    )
    assert response.status_code == 201, response.text
    out: dict[str, Any] = {}
    for name in ("acme", "globex"):
        tenant = await client.post(
            "/admin/tenants", json={"name": name, "plan": "std"}, headers=_as(ADMIN)
        )
        assert tenant.status_code == 201, tenant.text
        tid = tenant.json()["id"]
        key = await client.post(
            f"/admin/tenants/{tid}/keys",
            headers=_as(ADMIN),
            json={"name": "ops", "scopes": ["infer", "keys:admin", "audit:read"]},
        )
        assert key.status_code == 201, key.text
        out[name] = {"id": tid, "key": key.json()["secret"], "key_id": key.json()["id"]}
    return out


async def test_every_admin_route_needs_a_credential(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/admin/tenants"),
        ("POST", "/admin/tenants"),
        ("GET", "/admin/plans"),
        ("GET", "/admin/audit"),
    ]:
        response = await client.request(method, path, json={})
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    response = await client.get("/admin/tenants", headers=_as("mg_live_bogus"))
    assert response.status_code == 401


async def test_a_new_key_is_shown_once_and_works(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    acme = tenants["acme"]
    assert acme["key"].startswith("mg_live_")
    listed = await client.get(f"/admin/tenants/{acme['id']}/keys", headers=_as(acme["key"]))
    assert listed.status_code == 200
    body = listed.text
    assert acme["key"] not in body and "secret" not in body and "hash" not in body
    assert listed.json()[0]["prefix"] == acme["key"][: len(listed.json()[0]["prefix"])]
    infer = await client.post("/v2/models/doubler/infer", json=ROW, headers=_as(acme["key"]))
    assert infer.status_code == 200


async def test_tenants_cannot_reach_each_other(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    as_acme = _as(acme["key"])
    for method, path, body in [
        ("GET", f"/admin/tenants/{globex['id']}/keys", None),
        ("POST", f"/admin/tenants/{globex['id']}/keys", {"name": "x"}),
        ("POST", f"/admin/keys/{globex['key_id']}/revoke", None),
        ("POST", f"/admin/keys/{globex['key_id']}/rotate", None),
    ]:
        response = await client.request(method, path, json=body, headers=as_acme)
        assert response.status_code == 404, (path, response.text)
    tenants_seen = (await client.get("/admin/tenants", headers=as_acme)).json()
    assert [t["id"] for t in tenants_seen] == [acme["id"]]
    assert (await client.get("/admin/plans", headers=as_acme)).status_code == 403
    assert (
        await client.post("/admin/tenants", json={"name": "x", "plan": "std"}, headers=as_acme)
    ).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k", "tenant_id": "ten_other"},
        {"name": "k", "revoked_at": None},
        {"name": "k", "key_hash": "00"},
        {"name": "k", "scopes": ["tenants:admin"]},
        {"name": "k", "scopes": ["models:write"]},
    ],
)
async def test_bodies_cannot_grant_privileges(
    client: httpx.AsyncClient, tenants: dict[str, Any], body: dict[str, Any]
) -> None:
    acme = tenants["acme"]
    response = await client.post(
        f"/admin/tenants/{acme['id']}/keys", json=body, headers=_as(acme["key"])
    )
    assert response.status_code in (403, 422), response.text


async def test_revoke_takes_effect_at_once_on_this_replica_and_rotate_overlaps(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    acme = tenants["acme"]
    made = await client.post(
        f"/admin/tenants/{acme['id']}/keys", json={"name": "tmp"}, headers=_as(acme["key"])
    )
    secret, key_id = made.json()["secret"], made.json()["id"]
    assert (
        await client.post("/v2/models/doubler/infer", json=ROW, headers=_as(secret))
    ).status_code == 200
    rotated = await client.post(
        f"/admin/keys/{key_id}/rotate", json={"overlap_hours": 1}, headers=_as(acme["key"])
    )
    assert rotated.status_code == 201
    for key in (secret, rotated.json()["secret"]):  # both work during the overlap
        response = await client.post("/v2/models/doubler/infer", json=ROW, headers=_as(key))
        assert response.status_code == 200
    revoked = await client.post(f"/admin/keys/{key_id}/revoke", headers=_as(acme["key"]))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    after = await client.post("/v2/models/doubler/infer", json=ROW, headers=_as(secret))
    assert after.status_code == 401


async def test_the_audit_trail_records_changes_per_tenant_and_verifies(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    acme = tenants["acme"]
    mine = (await client.get("/admin/audit", headers=_as(acme["key"]))).json()
    assert mine and {r["tenant_id"] for r in mine} == {acme["id"]}
    everything = (await client.get("/admin/audit?limit=1000", headers=_as(ADMIN))).json()
    actions = {r["action"] for r in everything}
    assert {"plan.create", "tenant.create", "key.create"} <= actions
    assert all(r["actor"] and r["hash"] for r in everything)
    assert [r["seq"] for r in everything] == list(range(1, len(everything) + 1))
    verify = (await client.get("/admin/audit/verify", headers=_as(ADMIN))).json()
    assert verify["ok"] and verify["checked"] == len(everything)
    assert (await client.get("/admin/audit/verify", headers=_as(acme["key"]))).status_code == 403


async def test_openapi_covers_every_route_and_docs_work_offline(
    client: httpx.AsyncClient, app: Components
) -> None:
    document = (await client.get("/admin/openapi.json")).json()
    paths = set(document["paths"])
    assert paths == {
        "/admin/plans",
        "/admin/tenants",
        "/admin/tenants/{tenant_id}/keys",
        "/admin/keys/{key_id}/revoke",
        "/admin/keys/{key_id}/rotate",
        "/admin/audit",
        "/admin/audit/verify",
        "/admin/usage",
        "/admin/prices",
        "/admin/prices/{target}",
        "/admin/tenants/{tenant_id}/quotas",
        "/admin/tenants/{tenant_id}/payload-logging",
        "/admin/subjects/{subject}",
        "/admin/subjects/{subject}/export",
        "/admin/models/{model}/monitoring",
        "/admin/models/{model}/fairness",
        "/admin/models/{model}/learn",
        "/admin/models/{model}/learn/{run_id}",
        "/admin/models/{model}/card",
        "/admin/models/{model}/versions/{version}/card",
        "/admin/models/{model}/deployment",
        "/admin/models/{model}/deployment/promote",
        "/admin/models/{model}/deployment/rollback",
        "/admin/deployments",
        "/admin/traffic",
    }
    page = await client.get("/admin/docs")
    assert page.status_code == 200
    assert "/admin/static/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    asset = await client.get("/admin/static/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.text(max_size=80)
    | st.sampled_from(
        ["'; DROP TABLE tenants; --", '" OR 1=1 --', "robert'); --", "\x00", "a" * 70]
    )
)
async def test_no_tenant_name_gets_a_server_error(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post(
        "/admin/tenants", json={"name": name, "plan": "std"}, headers=_as(ADMIN)
    )
    assert response.status_code in (201, 400, 409, 422), response.text


async def test_metrics_are_open_by_default_and_protected_on_request(tmp_path: Path) -> None:
    for protect, expected in ((False, 200), (True, 401)):
        components = build_components(
            Settings(
                model_repository=FIXTURE_MODELS,
                data_dir=tmp_path / str(protect),
                admin_key=ADMIN,
                metrics_auth=protect,
            )
        )
        await components.open()
        transport = httpx.ASGITransport(app=components.rest_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            assert (await c.get("/metrics")).status_code == expected
            assert (await c.get("/metrics", headers=_as(ADMIN))).status_code == 200
        await components.close()


async def test_a_plan_that_names_no_quota_gets_the_default_rows_and_tokens_per_day(
    client: httpx.AsyncClient,
) -> None:
    """As `modelgate plans create`: a tenant's work is bounded from its first plan; a quota
    named null is none."""
    bounded = await client.post(
        "/admin/plans", json={"name": "bounded", "max_concurrency": 4}, headers=_as(ADMIN)
    )
    assert bounded.status_code == 201, bounded.text
    assert (bounded.json()["rows_per_day"], bounded.json()["tokens_per_day"]) == (
        1_000_000,
        10_000_000,
    )
    own = await client.post(
        "/admin/plans", json={"name": "own-quota", "requests_per_day": 9}, headers=_as(ADMIN)
    )
    assert own.status_code == 201, own.text
    assert (own.json()["requests_per_day"], own.json()["rows_per_day"]) == (9, None)
    unmetered = await client.post(
        "/admin/plans", json={"name": "unmetered", "rows_per_day": None}, headers=_as(ADMIN)
    )
    assert unmetered.status_code == 201, unmetered.text
    assert (unmetered.json()["rows_per_day"], unmetered.json()["tokens_per_day"]) == (None, None)
