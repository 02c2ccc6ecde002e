"""``/admin/usage`` and ``/admin/prices`` through the real admin app on SQLite: a tenant sees
only its own usage, another tenant's id answers like a missing one, bad parameters answer
in the admin error shape (never 500), price changes are operators' and audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.core.admission.usage import UsageRecord
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "u" * 24
DAY1 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=FIXTURE_MODELS,
            data_dir=tmp_path_factory.mktemp("usage"),
            auth="required",
            admin_key=ADMIN,
            currency="EUR",
        )
    )
    await components.open()
    yield components
    await components.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(app: Components) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def record(tenant: str, key: str | None, model: str, at: datetime, **sums: Any) -> UsageRecord:
    return UsageRecord(at, tenant, key, model, "1", "cpu", sums.pop("status", "ok"), False, **sums)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tenants(client: httpx.AsyncClient, app: Components) -> dict[str, Any]:
    """Two tenants, each with a key that reads usage and one that does not; their usage."""
    plan = await client.post("/admin/plans", json={"name": "std"}, headers=_as(ADMIN))
    assert plan.status_code == 201, plan.text
    out: dict[str, Any] = {}
    for name in ("acme", "globex"):
        tenant = await client.post(
            "/admin/tenants", json={"name": name, "plan": "std"}, headers=_as(ADMIN)
        )
        tid = tenant.json()["id"]
        keys = {}
        for key_name, scopes in (("reader", ["usage:read"]), ("runner", ["infer"])):
            made = await client.post(
                f"/admin/tenants/{tid}/keys",
                json={"name": key_name, "scopes": scopes},
                headers=_as(ADMIN),
            )
            assert made.status_code == 201, made.text
            keys[key_name] = made.json()
        out[name] = {"id": tid, "keys": keys}
    acme, globex = out["acme"]["id"], out["globex"]["id"]
    acme_key, globex_key = (
        out["acme"]["keys"]["runner"]["id"],
        out["globex"]["keys"]["runner"]["id"],
    )
    assert app.state is not None
    await app.state.usage.append(
        [
            record(acme, acme_key, "m1", DAY1, requests=2, rows=20, latency_ms_sum=30.0, cost=0.2),
            record(acme, acme_key, "m1", DAY2, requests=3, rows=30, status="error"),
            record(acme, None, "m2", DAY2, requests=1, tokens=50, cost=1.5),
            record(globex, globex_key, "m1", DAY1, requests=7, rows=70, cost=9.0),
        ]
    )
    return out


def reader(tenants: dict[str, Any], name: str) -> dict[str, str]:
    return _as(tenants[name]["keys"]["reader"]["secret"])


async def test_a_tenant_sees_only_its_own_usage(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    response = await client.get("/admin/usage", headers=reader(tenants, "acme"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["currency"] == "EUR"
    assert [(r["day"], r["requests"], r["errors"]) for r in body["rows"]] == [
        ("2025-03-04", 2, 0),
        ("2025-03-05", 4, 3),
    ]
    assert body["rows"][0]["latency_ms_avg"] == pytest.approx(15.0)
    by_tenant = await client.get(
        "/admin/usage?group_by=tenant,model", headers=reader(tenants, "acme")
    )
    assert {(r["tenant_id"], r["model"], r["requests"]) for r in by_tenant.json()["rows"]} == {
        (tenants["acme"]["id"], "m1", 5),
        (tenants["acme"]["id"], "m2", 1),
    }
    # another tenant's key is simply not among this tenant's records
    globex_key = tenants["globex"]["keys"]["runner"]["id"]
    other_key = await client.get(f"/admin/usage?key={globex_key}", headers=reader(tenants, "acme"))
    assert other_key.status_code == 200 and other_key.json()["rows"] == []


async def test_another_tenants_id_answers_exactly_like_a_missing_one(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    globex = tenants["globex"]["id"]
    taken = await client.get(f"/admin/usage?tenant={globex}", headers=reader(tenants, "acme"))
    missing = await client.get("/admin/usage?tenant=ten_nobody", headers=reader(tenants, "acme"))
    assert taken.status_code == missing.status_code == 404
    assert taken.json() == {"error": f"unknown tenant '{globex}'"}
    assert missing.json() == {"error": "unknown tenant 'ten_nobody'"}


async def test_operators_see_every_tenant_and_filter(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    everyone = await client.get("/admin/usage?group_by=tenant", headers=_as(ADMIN))
    totals = {r["tenant_id"]: (r["requests"], r["cost"]) for r in everyone.json()["rows"]}
    assert totals == {
        tenants["acme"]["id"]: (6, pytest.approx(1.7)),
        tenants["globex"]["id"]: (7, pytest.approx(9.0)),
    }
    globex = tenants["globex"]["id"]
    one = await client.get(f"/admin/usage?tenant={globex}&group_by=", headers=_as(ADMIN))
    assert [r["requests"] for r in one.json()["rows"]] == [7]
    ranged = await client.get(
        "/admin/usage",
        params={"since": "2025-03-05", "until": "2025-03-06T00:00:00Z", "group_by": "model"},
        headers=_as(ADMIN),
    )
    assert [(r["model"], r["requests"]) for r in ranged.json()["rows"]] == [("m1", 3), ("m2", 1)]
    zoned = await client.get(
        "/admin/usage",
        params={"since": "2025-03-05T01:00:00+02:00", "group_by": ""},  # 23:00 UTC the 4th
        headers=_as(ADMIN),
    )
    assert [r["requests"] for r in zoned.json()["rows"]] == [4]


async def test_credentials_and_scopes_are_checked(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    runner = _as(tenants["acme"]["keys"]["runner"]["secret"])
    for method, path in [
        ("GET", "/admin/usage"),
        ("GET", "/admin/prices"),
        ("PUT", "/admin/prices/default"),
        ("DELETE", "/admin/prices/default"),
    ]:
        body = {"per_1k_units": 1} if method == "PUT" else None
        anonymous = await client.request(method, path, json=body)
        assert anonymous.status_code == 401, (path, anonymous.text)
        denied = await client.request(method, path, json=body, headers=runner)
        assert denied.status_code == 403, (path, denied.text)
        assert "error" in denied.json()
    # a tenant may read prices but not set them
    acme = reader(tenants, "acme")
    assert (await client.get("/admin/prices", headers=acme)).status_code == 200
    put = await client.put("/admin/prices/default", json={"per_1k_units": 0}, headers=acme)
    assert put.status_code == 403


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": "day,region"}, "cannot group by"),
        ({"since": "yesterday"}, "'since' is not an ISO 8601"),
        ({"until": "2025-13-01"}, "'until' is not an ISO 8601"),
        ({"since": "2025-03-05T00:00:00 02:00"}, "'since'"),  # a '+' sent unencoded
        ({"since": "2025-03-05", "until": "2025-03-05"}, "before 'until'"),
        ({"since": "2025-03-06", "until": "2025-03-05"}, "before 'until'"),
        ({"since": "0001-01-01T00:00:00+14:00"}, "out of range"),
        ({"until": "9999-12-31T23:59:59-14:00"}, "out of range"),
    ],
)
async def test_bad_parameters_answer_400_in_the_admin_error_shape(
    client: httpx.AsyncClient, tenants: dict[str, Any], params: dict[str, str], message: str
) -> None:
    response = await client.get("/admin/usage", params=params, headers=reader(tenants, "acme"))
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    since=st.none() | st.text(max_size=40),
    until=st.none() | st.text(max_size=40),
    group_by=st.text(max_size=30) | st.sampled_from(["day", "day,model", ",,", "key,key"]),
    tenant=st.none() | st.text(max_size=140),
)
async def test_no_query_gets_a_server_error(
    client: httpx.AsyncClient,
    tenants: dict[str, Any],
    since: str | None,
    until: str | None,
    group_by: str,
    tenant: str | None,
) -> None:
    params = {"since": since, "until": until, "group_by": group_by, "tenant": tenant}
    sent = {name: value for name, value in params.items() if value is not None}
    response = await client.get("/admin/usage", params=sent, headers=_as(ADMIN))
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert set(response.json()) == {"error"}


async def test_prices_crud_is_audited(client: httpx.AsyncClient, tenants: dict[str, Any]) -> None:
    admin = _as(ADMIN)
    first = await client.put(
        "/admin/prices/model:m1",
        json={"per_1k_units": 0.5, "per_compute_second": 0.01},
        headers=admin,
    )
    assert first.status_code == 200, first.text
    assert first.json()["target"] == "model:m1" and first.json()["per_1k_units"] == 0.5
    second = await client.put("/admin/prices/model:m1", json={"per_1k_units": 2}, headers=admin)
    assert second.json()["per_1k_units"] == 2 and second.json()["per_compute_second"] == 0
    await client.put("/admin/prices/default", json={"per_1k_units": 0.1}, headers=admin)
    listed = await client.get("/admin/prices", headers=reader(tenants, "acme"))
    assert [(p["target"], p["per_1k_units"]) for p in listed.json()] == [
        ("default", 0.1),
        ("model:m1", 2.0),
    ]
    deleted = await client.delete("/admin/prices/model:m1", headers=admin)
    assert deleted.status_code == 204 and deleted.content == b""
    again = await client.delete("/admin/prices/model:m1", headers=admin)
    assert again.status_code == 404 and "error" in again.json()

    trail = (await client.get("/admin/audit?limit=1000", headers=admin)).json()
    changes = [r for r in trail if r["target"] == "price:model:m1"]
    assert [r["action"] for r in changes] == ["price.set", "price.set", "price.delete"]
    assert changes[0]["before"] is None and changes[0]["after"]["per_1k_units"] == 0.5
    assert changes[1]["before"]["per_1k_units"] == 0.5 and changes[1]["after"]["per_1k_units"] == 2
    assert changes[2]["after"] is None and changes[2]["before"]["per_1k_units"] == 2
    assert all(r["actor"] == "admin:bootstrap-admin" and r["tenant_id"] is None for r in changes)


@pytest.mark.parametrize(
    ("target", "body", "status"),
    [
        ("gpu", {"per_1k_units": 1}, 400),
        ("model:", {"per_1k_units": 1}, 400),
        ("model:m1", {"per_1k_units": -1}, 422),
        ("model:m1", {"per_1k_units": 1, "per_compute_second": -0.5}, 422),
        ("model:m1", {"per_1k_units": 1, "currency": "EUR"}, 422),
        ("model:m1", {}, 422),
    ],
)
async def test_bad_prices_are_refused(
    client: httpx.AsyncClient, target: str, body: dict[str, Any], status: int
) -> None:
    response = await client.put(f"/admin/prices/{target}", json=body, headers=_as(ADMIN))
    assert response.status_code == status, response.text


async def test_openapi_documents_the_usage_routes(client: httpx.AsyncClient) -> None:
    document = (await client.get("/admin/openapi.json")).json()
    assert {"/admin/usage", "/admin/prices", "/admin/prices/{target}"} <= set(document["paths"])
    assert set(document["paths"]["/admin/prices/{target}"]) == {"put", "delete"}
    usage = document["paths"]["/admin/usage"]["get"]["parameters"]
    assert {p["name"] for p in usage if p["in"] == "query"} == {
        "tenant",
        "key",
        "model",
        "since",
        "until",
        "group_by",
    }
