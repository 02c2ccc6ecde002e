"""What a tenant's credential can make ``/admin`` do, through the real app and the real
credit-risk demo model: its requests are rate limited per tenant (429 in the admin API's
shape, with Retry-After), and so are the fairness audits it makes the server compute; an
audit is computed once however many identical ones arrive together, and repeats within the
cache TTL are free; operators are not limited. ``/admin/models/{m}/monitoring`` shows a
tenant only its own slice; an operator, the whole model. A JSON body is read whatever its
declared type, multipart and non-JSON bodies under other types are 415."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.demo import credit_risk
from modelgate.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "g" * 24
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
BURST = 12
AUDITS_PER_MINUTE = 3
FAIRNESS = "/admin/models/credit-risk/fairness"
MONITORING = "/admin/models/credit-risk/monitoring"

Tenant = dict[str, str]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=demo_models,
            data_dir=tmp_path_factory.mktemp("admin-guard"),
            admin_key=ADMIN,
            # a burst, then (nearly) nothing: what a loop meets, whatever the machine's speed
            admin_rate_limit=0.001,
            admin_rate_burst=BURST,
            fairness_audits_per_minute=AUDITS_PER_MINUTE,
            feedback_flush_seconds=0.2,
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
        assert (await c.post("/admin/plans", json={"name": "std"}, headers=AS_ADMIN)).is_success
        yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def new_tenant(client: httpx.AsyncClient) -> Callable[[str], Awaitable[Tenant]]:
    """A fresh tenant (a rate-limit bucket of its own) with a key of ``infer`` and
    ``models:read``; ``key2`` is a second key of the same tenant."""

    async def make(name: str) -> Tenant:
        made = await client.post(
            "/admin/tenants", json={"name": name, "plan": "std"}, headers=AS_ADMIN
        )
        assert made.status_code == 201, made.text
        tenant: Tenant = {"id": made.json()["id"]}
        for slot in ("key", "key2"):
            key = await client.post(
                f"/admin/tenants/{tenant['id']}/keys",
                json={"name": slot, "scopes": ["infer", "models:read"]},
                headers=AS_ADMIN,
            )
            assert key.status_code == 201, key.text
            tenant[slot] = key.json()["secret"]
        return tenant

    return make


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- rate limits ---------------------------------------------------------------------------
async def test_a_tenant_looping_the_audit_is_refused_after_its_burst(
    client: httpx.AsyncClient, new_tenant: Callable[[str], Awaitable[Tenant]]
) -> None:
    looping, other = await new_tenant("looping"), await new_tenant("bystander")
    answers = [await client.get(FAIRNESS, headers=_as(looping["key"])) for _ in range(BURST)]
    assert [a.status_code for a in answers] == [200] * BURST
    refused = await client.get(FAIRNESS, headers=_as(looping["key"]))
    assert refused.status_code == 429, refused.text
    assert "admin API rate limit exceeded" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit"] == str(BURST)
    assert refused.headers["x-ratelimit-remaining"] == "0"
    # the bucket is the tenant's: its other key and its other routes are refused too...
    assert (await client.get(FAIRNESS, headers=_as(looping["key2"]))).status_code == 429
    assert (await client.get("/admin/tenants", headers=_as(looping["key"]))).status_code == 429
    # ...another tenant's and the operator's are not
    assert (await client.get(FAIRNESS, headers=_as(other["key"]))).status_code == 200
    assert (await client.get(FAIRNESS, headers=AS_ADMIN)).status_code == 200


async def test_a_tenant_past_its_limit_is_refused_before_its_body_is_read(
    app: Components,
    client: httpx.AsyncClient,
    new_tenant: Callable[[str], Awaitable[Tenant]],
) -> None:
    """The request bucket is spent from the headers alone: past it, a POST is answered 429
    (admin shape, Retry-After) without one byte of its body read, let alone parsed."""
    tenant = await new_tenant("body-never-read")
    for _ in range(BURST):  # 403 each (no tenants:admin scope): counted all the same
        spent = await client.post("/admin/plans", json={"name": "x"}, headers=_as(tenant["key"]))
        assert spent.status_code == 403, spent.text

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    body = json.dumps({"name": "n" * 100_000}).encode()
    headers = [
        (b"authorization", f"Bearer {tenant['key']}".encode()),
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/admin/plans", "raw_path": b"/admin/plans",
        "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 5000), "server": ("test", 80),
    }  # fmt: skip
    await app.rest_app(scope, receive, send)
    start = sent[0]
    assert start["status"] == 429
    answer = dict(start["headers"])
    assert int(answer[b"retry-after"]) >= 1
    assert answer[b"x-ratelimit-remaining"] == b"0"
    assert "admin API rate limit exceeded" in json.loads(sent[1]["body"])["error"]


async def test_operators_are_not_limited(client: httpx.AsyncClient) -> None:
    for _ in range(BURST * 2):
        answer = await client.get("/admin/tenants", headers=AS_ADMIN)
        assert answer.status_code == 200, answer.text


async def test_only_audits_computed_for_the_tenant_spend_its_audit_budget(
    client: httpx.AsyncClient, new_tenant: Callable[[str], Awaitable[Tenant]]
) -> None:
    tenant = await new_tenant("auditing")
    windows = [f"2026-01-{day:02d}" for day in range(1, AUDITS_PER_MINUTE + 2)]
    for since in windows[:AUDITS_PER_MINUTE]:  # a new question each time: computed
        answer = await client.get(FAIRNESS, params={"since": since}, headers=_as(tenant["key"]))
        assert answer.status_code == 200, answer.text
    refused = await client.get(FAIRNESS, params={"since": windows[-1]}, headers=_as(tenant["key"]))
    assert refused.status_code == 429, refused.text
    assert f"{AUDITS_PER_MINUTE} audits per 60 s" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1
    # a question asked before is answered from the cache: free
    cached = await client.get(FAIRNESS, params={"since": windows[0]}, headers=_as(tenant["key"]))
    assert cached.status_code == 200, cached.text


async def test_twenty_identical_audits_at_once_are_computed_once(
    app: Components, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = app.state.feedback_service.store
    reads: list[Any] = []
    labelled = store.labelled

    async def counted(query: Any) -> Any:
        reads.append(query)
        return await labelled(query)

    monkeypatch.setattr(store, "labelled", counted)
    params = {"since": "2025-06-01", "attribute": "age_band"}  # a question nobody asked yet
    answers = await asyncio.gather(
        *(client.get(FAIRNESS, params=params, headers=AS_ADMIN) for _ in range(20))
    )
    assert [a.status_code for a in answers] == [200] * 20
    assert len(reads) == 1
    assert all(a.json() == answers[0].json() for a in answers)
    assert (await client.get(FAIRNESS, params=params, headers=AS_ADMIN)).json() == (
        answers[0].json()
    )
    assert len(reads) == 1  # the repeat, within the TTL: from the cache


# -- monitoring: a tenant's slice ---------------------------------------------------------
async def _traffic(client: httpx.AsyncClient, key: str, rows: int, seed: int) -> None:
    data = credit_risk.generate(rows, seed=seed)
    items = []
    for start in range(0, rows, 50):
        chunk = data.features[start : start + 50].astype(np.float32)
        tensor = {"name": "features", "datatype": "FP32", "shape": list(chunk.shape)}
        body = {"inputs": [tensor | {"data": chunk.ravel().tolist()}]}
        answer = await client.post(
            "/v2/models/credit-risk/versions/2/infer", json=body, headers=_as(key)
        )
        assert answer.status_code == 200, answer.text
        labels = data.labels[start : start + 50].astype(int).tolist()
        items.append({"request_id": answer.headers["x-request-id"], "labels": labels})
    answer = await client.post("/v1/feedback", json={"items": items}, headers=_as(key))
    assert answer.json() == {"accepted": rows}, answer.text


async def test_a_tenant_sees_its_own_slice_of_monitoring_and_an_operator_everything(
    client: httpx.AsyncClient, new_tenant: Callable[[str], Awaitable[Tenant]]
) -> None:
    big, small = await new_tenant("big"), await new_tenant("small")
    await _traffic(client, big["key"], 150, seed=3)
    await _traffic(client, small["key"], 100, seed=4)

    async def version_2(headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
        answer = await client.get(MONITORING, params={"version": "2"}, headers=headers)
        assert answer.status_code == 200, answer.text
        (report,) = answer.json()["versions"]
        return answer.json()["scope"], report

    scope, everything = await version_2(AS_ADMIN)
    assert scope == "model"
    assert everything["rows"] >= 250  # every tenant's rows (the module's other tests add some)
    assert everything["concept"]["labelled"] >= 250
    assert all(f["psi"] is not None for f in everything["features"])

    for tenant, labelled in ((big, 150), (small, 100)):
        scope, mine = await version_2(_as(tenant["key"]))
        assert scope == "tenant"
        # the model-wide window: its verdicts, none of its figures
        assert mine["status"] == everything["status"]
        assert mine["rows"] is None and mine["requests"] is None and mine["anomalies"] is None
        assert mine["confidence"] == {}
        assert [(f["name"], f["status"]) for f in mine["features"]] == [
            (f["name"], f["status"]) for f in everything["features"]
        ]
        assert all(f["psi"] is None and f["live_mean"] is None for f in mine["features"])
        assert all(set(p.values()) <= {p["output"], p["status"], None}
                   for p in mine["predictions"])  # fmt: skip
        # the ground truth is the tenant's own
        assert mine["concept"]["labelled"] == labelled
        assert mine["concept"]["accuracy"] is not None


# -- JSON bodies under any type -----------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "application/octet-stream", None],
)
async def test_a_json_body_is_read_whatever_its_type(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    name = f"plan-{(content_type or 'none').replace('/', '-')}"
    headers = dict(AS_ADMIN) | ({"Content-Type": content_type} if content_type else {})
    body = json.dumps({"name": name, "requests_per_second": 5}).encode()
    answer = await client.post("/admin/plans", content=body, headers=headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == name


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        ("application/x-www-form-urlencoded", b"name=acme&plan=std", "is not JSON"),
        ("text/plain", b"{'name': 'acme'}", "is not JSON"),
        ("multipart/form-data; boundary=x", b'--x\r\n\r\n{"name": "a"}\r\n--x--', "multipart"),
    ],
)
async def test_a_body_that_cannot_be_json_is_415(
    client: httpx.AsyncClient, content_type: str, body: bytes, says: str
) -> None:
    headers = AS_ADMIN | {"Content-Type": content_type}
    answer = await client.post("/admin/tenants", content=body, headers=headers)
    assert answer.status_code == 415, answer.text
    message = answer.json()["error"]
    assert says in message
    assert "curl -d" in message


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_rotate_bodies = st.one_of(
    st.fixed_dictionaries({}, optional={"overlap_hours": st.integers(-5, 200) | _json}).map(
        lambda d: json.dumps(d).encode()
    ),
    _json.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_rotate_bodies,
    content_type=st.sampled_from(["application/x-www-form-urlencoded", "text/plain", None]),
)
async def test_any_body_is_answered_as_under_application_json_or_415(
    client: httpx.AsyncClient, body: bytes, content_type: str | None
) -> None:
    """The same body under another type gets the answer it gets as JSON (the route runs,
    or the body's 422), unless it is no JSON at all: then 415, never a 500."""
    path = "/admin/keys/no-such-key/rotate"  # a valid body runs the route: 404, no effect
    as_json = await client.post(
        path, content=body, headers=AS_ADMIN | {"Content-Type": "application/json"}
    )
    headers = AS_ADMIN | ({"Content-Type": content_type} if content_type else {})
    other = await client.post(path, content=body, headers=headers)
    try:
        json.loads(body)
    except ValueError:
        is_json = False
    else:
        is_json = True
    if is_json or not body:
        assert (other.status_code, other.json()) == (as_json.status_code, as_json.json())
    else:
        assert other.status_code == 415, other.text
    assert as_json.status_code in (400, 404, 422)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    depth=st.integers(1, 200_000),
    opener=st.sampled_from(["[", '{"a":', '{"name":[']),
    content_type=st.sampled_from(["application/json", "text/plain", None]),
)
async def test_json_nested_however_deep_is_a_4xx_in_the_admin_shape(
    client: httpx.AsyncClient, depth: int, opener: str, content_type: str | None
) -> None:
    """Nesting past the JSON parser's depth (a RecursionError) is 400 in the admin API's
    shape, for any declared type, never a plain-text 500 (an unfinished document is the
    validation 422 under application/json, 415 under another type; a body past the admin
    API's 1 MiB limit is 413 before any parsing)."""
    body = (opener * depth).encode()
    headers = AS_ADMIN | ({"Content-Type": content_type} if content_type else {})
    answer = await client.post("/admin/plans", content=body, headers=headers)
    assert answer.status_code in (400, 413, 415, 422), answer.text[:300]
    shape = "detail" if answer.status_code == 422 else "error"
    assert answer.json()[shape], answer.text[:300]
