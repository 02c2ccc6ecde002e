"""``Idempotency-Key`` on the admin API's side-effecting routes: a retry gets the first
answer again (``Idempotent-Replayed: true``) and the change happens once, also when the
retry reaches another server on the same database; a key reused for another request
answers 422, a key still running 409, a malformed key 400 and never a 5xx; a new API
key's secret is replayed only when it could be kept sealed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.core.admission.idempotency import request_hash
from modelgate.core.admission.ports import IdempotencyRecord
from modelgate.settings import Settings
from modelgate.storage.sql.idempotency import SqlIdempotencyStore
from modelgate.storage.sql.schema import idempotency_keys
from tests.conftest import FIXTURE_MODELS
from tests.contract.conftest import drop_postgres_database, new_postgres_database

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "i" * 24
AUTH = {"Authorization": f"Bearer {ADMIN}"}
PAYLOAD_KEY = base64.b64encode(b"k" * 32).decode()


@contextlib.asynccontextmanager
async def _server(data_dir: Path, **overrides: Any) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=FIXTURE_MODELS,
            data_dir=data_dir,
            auth="required",
            admin_key=ADMIN,
            **overrides,
        )
    )
    await components.open()
    await components.start()
    try:
        yield components
    finally:
        await components.close()


def _client(components: Components) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=components.rest_app)
    return httpx.AsyncClient(transport=transport, base_url="http://test", headers=AUTH)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Components]:
    async with _server(tmp_path_factory.mktemp("idempotency")) as components:
        yield components


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(app: Components) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tenant(client: httpx.AsyncClient) -> str:
    plan = await client.post("/admin/plans", json={"name": "base"})
    assert plan.status_code in (201, 409)  # 409: made by an earlier test
    created = await client.post("/admin/tenants", json={"name": "initech", "plan": "base"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _key(name: str) -> dict[str, str]:
    return {"Idempotency-Key": name}


async def test_a_retried_post_is_answered_again_and_runs_once(
    client: httpx.AsyncClient,
) -> None:
    body = {"name": "gold", "requests_per_second": 10}
    first = await client.post("/admin/plans", json=body, headers=_key("plan-gold-1"))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    # the same JSON, serialized another way (key order, spacing): the same request
    again = await client.post(
        "/admin/plans",
        content=b'{ "requests_per_second": 10, "name": "gold" }',
        headers={**_key("plan-gold-1"), "content-type": "application/json"},
    )
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    # without the key the retry is a second create, refused: the plan exists once
    plans = (await client.get("/admin/plans")).json()
    assert [p["name"] for p in plans].count("gold") == 1


async def test_the_same_key_for_another_request_answers_422(
    client: httpx.AsyncClient,
) -> None:
    key = _key("reused-for-another")
    assert (await client.post("/admin/plans", json={"name": "p1"}, headers=key)).status_code == 201
    other_body = await client.post("/admin/plans", json={"name": "p2"}, headers=key)
    assert other_body.status_code == 422
    assert "Idempotency-Key" in other_body.json()["error"]
    other_path = await client.post("/admin/tenants", json={"name": "p1", "plan": "p1"}, headers=key)
    assert other_path.status_code == 422
    names = [p["name"] for p in (await client.get("/admin/plans")).json()]
    assert "p1" in names and "p2" not in names


@pytest.mark.parametrize("value", ["", "k" * 256, "with space", "tab\there"])
async def test_a_malformed_key_answers_400(client: httpx.AsyncClient, value: str) -> None:
    answer = await client.post("/admin/plans", json={"name": "never"}, headers=_key(value))
    assert answer.status_code == 400, answer.text
    assert "Idempotency-Key" in answer.json()["error"]
    longest = await client.post("/admin/plans", json={"name": "k255"}, headers=_key("k" * 255))
    assert longest.status_code == 201, longest.text  # made once, replayed after


async def test_an_answer_that_is_not_2xx_is_not_kept(
    client: httpx.AsyncClient,
) -> None:
    key = _key("tenant-before-its-plan")
    body = {"name": "hooli", "plan": "later"}
    refused = await client.post("/admin/tenants", json=body, headers=key)
    assert refused.status_code == 400, refused.text  # no such plan: nothing was done
    assert (await client.post("/admin/plans", json={"name": "later"})).status_code == 201
    done = await client.post("/admin/tenants", json=body, headers=key)
    assert done.status_code == 201, done.text
    assert "idempotent-replayed" not in done.headers


async def test_concurrent_requests_with_one_key_run_once(client: httpx.AsyncClient) -> None:
    body = {"name": "parallel", "plan": "base"}
    await client.post("/admin/plans", json={"name": "base"})  # may exist already
    answers = await asyncio.gather(
        *(client.post("/admin/tenants", json=body, headers=_key("same-time")) for _ in range(5))
    )
    assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 4
    tenants = (await client.get("/admin/tenants")).json()
    assert [t["name"] for t in tenants].count("parallel") == 1


async def test_a_key_still_running_answers_409_after_a_short_wait(
    app: Components, client: httpx.AsyncClient
) -> None:
    # a request that began and never ended (another replica working on it, for the test)
    assert (
        await client.post("/admin/plans", json={"name": "x0"}, headers=_key("probe"))
    ).is_success
    assert app.state is not None
    async with app.state.engine.connect() as connection:
        owner = (
            await connection.execute(
                select(idempotency_keys.c.owner).where(idempotency_keys.c.key == "probe")
            )
        ).scalar_one()
    body = orjson.dumps({"name": "slow"}, option=orjson.OPT_SORT_KEYS)
    started = IdempotencyRecord(
        owner, "running", "POST", "/admin/plans", request_hash("POST", "/admin/plans", body),
        datetime.now(UTC),
    )  # fmt: skip
    store = SqlIdempotencyStore(app.state.engine)
    now = datetime.now(UTC)
    assert await store.begin(started, expired_before=now, stale_before=now) is None
    answer = await client.post("/admin/plans", json={"name": "slow"}, headers=_key("running"))
    assert answer.status_code == 409
    assert answer.headers["retry-after"] == "1"
    assert "still running" in answer.json()["error"]
    assert "slow" not in [p["name"] for p in (await client.get("/admin/plans")).json()]


async def test_a_new_keys_secret_is_never_kept_in_clear(
    app: Components, client: httpx.AsyncClient, tenant: str
) -> None:
    body = {"name": "ci", "scopes": ["infer"]}
    first = await client.post(f"/admin/tenants/{tenant}/keys", json=body, headers=_key("mk-1"))
    assert first.status_code == 201, first.text
    secret = first.json()["secret"]
    again = await client.post(f"/admin/tenants/{tenant}/keys", json=body, headers=_key("mk-1"))
    # no payload cipher configured: the secret cannot be replayed; the key made is named
    assert again.status_code == 409
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["completed"]["id"] == first.json()["id"]
    assert secret not in again.text
    keys = (await client.get(f"/admin/tenants/{tenant}/keys")).json()
    assert [k["name"] for k in keys].count("ci") == 1
    assert app.state is not None
    async with app.state.engine.connect() as connection:
        stored = (await connection.execute(select(idempotency_keys.c.body))).scalars().all()
    assert all(secret.encode() not in (b or b"") for b in stored)


async def test_rotate_revoke_and_prices_take_the_key(
    client: httpx.AsyncClient, tenant: str
) -> None:
    made = await client.post(
        f"/admin/tenants/{tenant}/keys", json={"name": "r", "scopes": ["infer"]}
    )
    key_id = made.json()["id"]
    rotated = await client.post(f"/admin/keys/{key_id}/rotate", headers=_key("rotate-1"))
    again = await client.post(f"/admin/keys/{key_id}/rotate", headers=_key("rotate-1"))
    assert rotated.status_code == 201 and again.status_code == 409  # a secret: not replayed
    assert again.json()["completed"]["id"] == rotated.json()["id"]
    new_id = rotated.json()["id"]
    first = await client.post(f"/admin/keys/{new_id}/revoke", headers=_key("revoke-1"))
    again = await client.post(f"/admin/keys/{new_id}/revoke", headers=_key("revoke-1"))
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    price = {"per_1k_units": 1.5}
    first = await client.put("/admin/prices/model:doubler", json=price, headers=_key("price-1"))
    again = await client.put("/admin/prices/model:doubler", json=price, headers=_key("price-1"))
    assert first.status_code == again.status_code == 200, first.text
    assert again.headers["idempotent-replayed"] == "true"
    gone = await client.delete("/admin/prices/model:doubler", headers=_key("price-2"))
    again = await client.delete("/admin/prices/model:doubler", headers=_key("price-2"))
    assert gone.status_code == again.status_code == 204
    assert again.headers["idempotent-replayed"] == "true"


async def test_get_ignores_the_header(client: httpx.AsyncClient) -> None:
    first = await client.get("/admin/plans", headers=_key("read"))
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    assert (await client.get("/admin/plans", headers=_key(""))).status_code == 200


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=st.binary(max_size=300), body=st.sampled_from([b'{"name": "fz"}', b"{", b""]))
async def test_malformed_keys_never_answer_5xx(
    client: httpx.AsyncClient, value: bytes, body: bytes
) -> None:
    answer = await client.post(
        "/admin/plans",
        content=body,
        headers=[(b"idempotency-key", value), (b"content-type", b"application/json")],
    )
    assert answer.status_code < 500, answer.text


# -- two servers on one database ---------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def shared_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {"database_url": f"sqlite:///{tmp_path / 'shared.db'}"}
        return
    url = new_postgres_database()
    try:
        yield {"database_url": url}
    finally:
        drop_postgres_database(url)


async def test_a_retry_reaching_another_server_is_answered_again(
    shared_database: dict[str, Any], tmp_path: Path
) -> None:
    async with (
        _server(tmp_path / "a", **shared_database, payload_keys={"k1": PAYLOAD_KEY},
                payload_pseudonym_key="p" * 16) as a,
        _server(tmp_path / "b", **shared_database, payload_keys={"k1": PAYLOAD_KEY},
                payload_pseudonym_key="p" * 16) as b,
        _client(a) as on_a,
        _client(b) as on_b,
    ):  # fmt: skip
        assert (await on_a.post("/admin/plans", json={"name": "std"})).status_code == 201
        body = {"name": "umbrella", "plan": "std"}
        first = await on_a.post("/admin/tenants", json=body, headers=_key("t-1"))
        again = await on_b.post("/admin/tenants", json=body, headers=_key("t-1"))
        assert first.status_code == again.status_code == 201, again.text
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        tenant = first.json()["id"]
        # both servers at once, many times: one key made per idempotency key
        for n in range(5):
            key_body = {"name": f"svc-{n}", "scopes": ["infer"]}
            answers = await asyncio.gather(
                *(
                    c.post(f"/admin/tenants/{tenant}/keys", json=key_body, headers=_key(f"k-{n}"))
                    for c in (on_a, on_b, on_a, on_b)
                )
            )
            assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
            # a payload cipher is configured: the secret is kept sealed and replayed
            assert len({(a.json()["id"], a.json()["secret"]) for a in answers}) == 1
        keys = (await on_b.get(f"/admin/tenants/{tenant}/keys")).json()
        assert sorted(k["name"] for k in keys) == [f"svc-{n}" for n in range(5)]
        # subject erasure (needs the payload keys these servers have)
        path = f"/admin/subjects/user-7?tenant={tenant}"
        erased = await on_a.delete(path, headers=_key("erase-1"))
        again = await on_b.delete(path, headers=_key("erase-1"))
        assert erased.status_code == again.status_code == 200, erased.text
        assert again.json() == erased.json() and again.headers["idempotent-replayed"] == "true"
        other = await on_b.delete("/admin/subjects/user-8", headers=_key("erase-1"))
        assert other.status_code == 422  # the path and query are part of the request
