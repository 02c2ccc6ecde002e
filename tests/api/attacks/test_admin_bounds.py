"""Numbers the admin API takes are bounded by what stores them (out of range: 422, never a
500, on SQLite and PostgreSQL), and its OpenAPI document says what it answers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.api.admin.openapi import ROUTE_ERRORS
from modelgate.api.admin.schemas import INT32_MAX, INT64_MAX
from tests.api.attacks.world import World

pytestmark = pytest.mark.asyncio(loop_scope="module")

_SOME = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("who", ["admin", "acme_ops"])
@pytest.mark.parametrize(
    ("after_seq", "status"),
    [
        ("9223372036854775808", 422),  # the finding: 2**63, a 500 on both backends before
        ("9223372036854775807", 422),
        (str(10**40), 422),
        ("-1", 422),
        ("1e3", 422),
        (str(INT64_MAX), 200),
        ("0", 200),
    ],
)
async def test_after_seq_is_bounded(world: World, who: str, after_seq: str, status: int) -> None:
    response = await world.http.get(
        "/admin/audit", params={"after_seq": after_seq}, headers=world.auth(who)
    )
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json() == [] or after_seq == "0"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("burst", INT32_MAX + 1),
        ("max_concurrency", INT32_MAX + 1),
        ("max_batch_size", 2**63),
        ("requests_per_day", INT64_MAX + 1),
        ("tokens_per_month", 2**64),
        ("requests_per_second", 1e10),
        ("priority", 10),
        ("burst", True),  # strict: a boolean is no number
        ("burst", "5"),
    ],
)
async def test_plan_numbers_out_of_range_are_422(world: World, field: str, value: Any) -> None:
    response = await world.http.post(
        "/admin/plans", json={"name": "bounded", field: value}, headers=world.auth("admin")
    )
    assert response.status_code == 422, response.text


async def test_a_number_json_cannot_hold_is_422(world: World) -> None:
    body = b'{"name": "huge", "requests_per_second": 1e999}'  # inf to most parsers
    response = await world.http.post(
        "/admin/plans",
        content=body,
        headers={**world.auth("admin"), "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "body",
    [
        {"expires_at": "2031-01-01T00:00:00"},  # no zone: a 500 before (naive vs aware)
        {"burst": INT32_MAX + 1},
        {"requests_per_second": 1e300},
        {"scopes": ["infer"], "name": 5},
    ],
)
async def test_key_bodies_out_of_range_are_422(world: World, body: dict[str, Any]) -> None:
    response = await world.http.post(
        "/admin/tenants/ten_acme/keys", json=body, headers=world.auth("acme_ops")
    )
    assert response.status_code == 422, response.text


@_SOME
@given(
    field=st.sampled_from(["burst", "requests_per_day", "max_batch_size", "rows_per_month"]),
    value=st.integers(min_value=-(2**70), max_value=2**70),
)
async def test_any_integer_in_a_plan_is_a_4xx_or_stored(
    world: World, field: str, value: int
) -> None:
    response = await world.http.post(
        "/admin/plans",
        json={"name": f"p{value % 10**6}", field: value},
        headers=world.auth("admin"),
    )
    assert response.status_code in (201, 409, 422), response.text
    limit = INT32_MAX if field in ("burst", "max_batch_size") else INT64_MAX
    if not 1 <= value <= limit:
        assert response.status_code == 422


async def test_405_names_every_method_of_the_path(world: World) -> None:
    response = await world.http.request(
        "PATCH", "/admin/tenants/ten_acme/payload-logging", headers=world.auth("acme_ops")
    )
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) >= {"GET", "PUT"}
    assert response.json() == {"error": "Method Not Allowed"}


async def test_an_unknown_admin_path_is_404_in_the_admin_shape(world: World) -> None:
    response = await world.http.get("/admin/nothing-here", headers=world.auth("admin"))
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


async def test_the_document_lists_what_every_route_answers(world: World) -> None:
    document = (await world.http.get("/admin/openapi.json")).json()
    operations = {
        (method.upper(), path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    assert set(operations) == set(ROUTE_ERRORS)
    for (method, _path), operation in operations.items():
        statuses = set(operation["responses"])
        assert {"401", "403", "413", "429", "503"} <= statuses
        names = {p["name"].lower() for p in operation.get("parameters", [])}
        assert not names & {"authorization", "x-api-key"}  # credentials are security schemes
        assert operation["security"] == [{"bearer": []}, {"apiKey": []}]
        if method in ("POST", "PUT", "DELETE"):
            assert "idempotency-key" in names
            assert {"400", "409", "422"} <= statuses
        else:
            assert "idempotency-key" not in names
    error = document["components"]["schemas"]["AdminError"]
    assert error["required"] == ["error"]
