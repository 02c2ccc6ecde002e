"""SQL/JSON injection strings in every text field (a table, and hypothesis for the admin names
and the usage parameters): a 4xx, or a 2xx where the value is legal, never a 5xx; the
tables hold what they held and the server still answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from tests.api.attacks.world import (
    ATTACKS,
    BODY_ATTACKS,
    INFER,
    LEGAL_NAME,
    LEGAL_TARGET,
    NEW_KEY,
    ROW,
    Answer,
    V,
    World,
    assert_nothing_of_globex,
    call_grpc,
    call_rest,
    fill,
    infer_request,
    records,
    row_of,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _always(_value: str) -> bool:
    return True


def _never(_value: str) -> bool:
    return False


def _anything(_answer: Answer, _value: str) -> bool:
    return True


def _default_version(value: str) -> bool:
    return value == ""  # no version: the model's default one (OIP)


def _legal_name(value: str) -> bool:
    return LEGAL_NAME.fullmatch(value) is not None


def _legal_target(value: str) -> bool:
    return LEGAL_TARGET.fullmatch(value) is not None


def _blank_groups(value: str) -> bool:
    return all(not name.strip() for name in value.split(","))  # one total row


def _empty(value: str) -> bool:
    return value == ""


def _no_rows(answer: Answer, _value: str) -> bool:
    return bool(answer.json()["rows"] == [])  # a string is compared, never a pattern


def _echoed_id(answer: Answer, value: str) -> bool:
    return bool(answer.json()["id"] == value)


def _as_bytes(answer: Answer, value: str) -> bool:
    length = next(o for o in answer.json()["outputs"] if o["name"] == "length")
    return bool(length["data"] == [len(value.encode())])  # reached the model unchanged


_X = ROW["inputs"][0]
_TEXT = {"name": "text", "datatype": "BYTES", "shape": [1]}
USAGE_PARAMETERS = ("tenant", "key", "model", "group_by", "since", "until")
#: (field, "METHOD path", body); the operator sends the first rows (theirs), acme the rest
REST_FIELDS: list[tuple[str, str, Any]] = [
    ("tenant.name", "POST /admin/tenants", {"name": V, "plan": "std"}),
    ("tenant.plan", "POST /admin/tenants", {"name": "inj", "plan": V}),
    ("plan.name", "POST /admin/plans", {"name": V}),
    ("key.name", f"POST {NEW_KEY}", {"name": V}),
    ("key.scopes", f"POST {NEW_KEY}", {"name": "inj", "scopes": [V]}),
    ("key.expires_at", f"POST {NEW_KEY}", {"name": "inj", "expires_at": V}),
    ("price.target", f"PUT /admin/prices/{V}", {"per_1k_units": 0}),
    ("price.target.delete", f"DELETE /admin/prices/{V}", None),
    ("rotate.overlap_hours", "POST /admin/keys/key_acme_prober/rotate", {"overlap_hours": V}),
    ("path.tenant-id.keys", f"GET /admin/tenants/{V}/keys", None),
    ("path.tenant-id.new-key", f"POST /admin/tenants/{V}/keys", {"name": "inj"}),
    ("path.tenant-id.quotas", f"GET /admin/tenants/{V}/quotas", None),
    ("path.tenant-id.consent", f"GET /admin/tenants/{V}/payload-logging", None),
    (
        "consent.purpose",
        "PUT /admin/tenants/ten_acme/payload-logging",
        {"enabled": False, "purpose": V},
    ),
    ("path.subject.export", f"GET /admin/subjects/{V}/export", None),
    ("path.subject.erase", f"DELETE /admin/subjects/{V}", None),
    ("path.key-id.revoke", f"POST /admin/keys/{V}/revoke", None),
    ("path.key-id.rotate", f"POST /admin/keys/{V}/rotate", None),
    ("path.model.metadata", f"GET /v2/models/{V}", None),
    ("path.model.infer", f"POST /v2/models/{V}/infer", ROW),
    ("path.model.load", f"POST /v2/repository/models/{V}/load", None),
    ("path.version.infer", f"POST /v2/models/doubler/versions/{V}/infer", ROW),
    ("path.version.metadata", f"GET /v2/models/doubler/versions/{V}", None),
    ("path.openai-model", f"GET /v1/models/{V}", None),
    *((f"usage.{p}", f"GET /admin/usage?{p}={V}", None) for p in USAGE_PARAMETERS),
    ("openai.model", "POST /v1/embeddings", {"model": V, "input": "hi"}),
    # echo-text is no embedding model: the input is parsed, then refused
    ("openai.input", "POST /v1/embeddings", {"model": "echo-text", "input": V}),
    ("oip.input-name", f"POST {INFER}", {"inputs": [{**_X, "name": V}]}),
    ("oip.datatype", f"POST {INFER}", {"inputs": [{**_X, "datatype": V}]}),
    ("oip.output-name", f"POST {INFER}", {**ROW, "outputs": [{"name": V}]}),
    ("oip.request-id", f"POST {INFER}", {**ROW, "id": V}),
    ("oip.bytes-data", "POST /v2/models/echo-text/infer", {"inputs": [{**_TEXT, "data": [V]}]}),
]
_OPERATORS = ("tenant.", "plan.", "key.", "price.")
#: (field, rpc, the request with the value in that field), sent by acme
GRPC_FIELDS: list[tuple[str, str, Callable[[str], Any]]] = [
    ("grpc.model-name", "ModelInfer", lambda v: infer_request(v)),
    ("grpc.model-version", "ModelInfer", lambda v: infer_request("doubler", v)),
    ("grpc.input-name", "ModelInfer", lambda v: infer_request("doubler", name=v)),
    ("grpc.datatype", "ModelInfer", lambda v: infer_request("doubler", datatype=v)),
    ("grpc.metadata-name", "ModelMetadata", lambda v: service_pb2.ModelMetadataRequest(name=v)),
]
#: the values that may succeed, per field (the others: none)
LEGAL: dict[str, Callable[[str], bool]] = {
    "tenant.name": _legal_name,
    "tenant.plan": _legal_name,  # a legal name may be a plan that "plan.name" made
    "plan.name": _legal_name,
    "key.name": _legal_name,
    "price.target": _legal_target,
    "path.version.infer": _default_version,
    "path.version.metadata": _default_version,
    "grpc.model-version": _default_version,
    "usage.tenant": _empty,  # no tenant: the caller's own
    "usage.key": _always,
    "usage.model": _always,
    "usage.group_by": _blank_groups,
    "usage.since": _empty,  # no bound
    "usage.until": _empty,
    "oip.request-id": _always,
    "oip.bytes-data": _always,
    # free text and opaque ids, stored (or pseudonymized) as data
    "consent.purpose": _always,
    "path.subject.export": _always,
    "path.subject.erase": _always,
}
#: what a successful answer must show, per field
CHECK: dict[str, Callable[[Answer, str], bool]] = {
    "usage.key": _no_rows,
    "usage.model": _no_rows,
    "oip.request-id": _echoed_id,
    "oip.bytes-data": _as_bytes,
    "consent.purpose": lambda answer, value: answer.json()["purpose"] == value,
    # nobody's payloads: an injection string finds nothing and erases nothing
    "path.subject.export": lambda answer, value: answer.json()["payload_logs"] == [],
    "path.subject.erase": lambda answer, value: (
        answer.json()["erased"] == {"payload_logs": 0, "predictions": 0}
    ),
}


def _mentions_v(template: Any) -> bool:
    if isinstance(template, dict):
        return any(_mentions_v(v) for v in template.values())
    if isinstance(template, list):
        return any(_mentions_v(v) for v in template)
    return template == V


async def _put(world: World, name: str, value: str) -> Answer:
    """``value`` in field ``name`` (a row of REST_FIELDS or GRPC_FIELDS)."""
    for field_name, rpc, build in GRPC_FIELDS:
        if field_name == name:
            return await call_grpc(world, rpc, build(value), world.grpc_auth("acme_ops"))
    route, body = next((r, b) for n, r, b in REST_FIELDS if n == name)
    method, path = route.split(" ", 1)
    who = "admin" if name.startswith(_OPERATORS) else "acme_ops"
    segment = quote(value, safe="")  # one path segment (or query value), whatever it holds
    return await call_rest(world, method, fill(path, segment), world.auth(who), fill(body, value))


def _values(name: str) -> list[str]:
    body = next((b for n, _, b in REST_FIELDS if n == name), None)
    return BODY_ATTACKS if _mentions_v(body) else ATTACKS


def _added(answer: Answer) -> list[dict[str, Any]]:
    """What a successful write added, as :func:`_records` will show it."""
    if answer.status not in (200, 201):
        return []
    body = answer.json()
    made = isinstance(body, dict) and body.keys() & {"id", "target", "priority"}
    return [body] if made else []


def _kind(record: dict[str, Any]) -> str:
    if "prefix" in record:
        return "keys"
    if "target" in record:
        return "prices"
    return "tenants" if "plan" in record else "plans"


async def _assert_intact(world: World, before: dict[str, list[str]], added: list[Any]) -> None:
    """The tables hold what they held plus what legal values made; the server answers."""
    expected = {kind: list(rows) for kind, rows in before.items()}
    for record in added:
        expected[_kind(record)].append(row_of(record))
    assert await records(world) == {kind: sorted(rows) for kind, rows in expected.items()}
    ready = await call_rest(world, "GET", "/v2/health/ready")
    infer = await call_rest(world, "POST", INFER, world.auth("acme_ops"), ROW)
    assert (ready.status, infer.status) == (200, 200)


FIELDS = [name for name, _, _ in REST_FIELDS] + [name for name, _, _ in GRPC_FIELDS]


@pytest.mark.parametrize("name", FIELDS)
async def test_injection_strings_are_only_data(world: World, name: str) -> None:
    legal, check = LEGAL.get(name, _never), CHECK.get(name, _anything)
    before = await records(world)
    added: list[Any] = []
    wrong = []

    for value in _values(name):
        answer = await _put(world, name, value)
        succeeded = answer.status in (200, 201)
        fine = (
            400 <= answer.status < 500
            or (succeeded and legal(value) and check(answer, value))
            # an empty last segment: Starlette redirects /admin/prices/ to /admin/prices
            or (answer.status == 307 and value == "" and name.startswith("price."))
        )
        if not fine:
            wrong.append((value[:40], answer.status, answer.text[:200]))
        if succeeded and name.startswith(_OPERATORS):
            added += _added(answer)

    assert not wrong, wrong
    await _assert_intact(world, before, added)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/tenants", {"name": {"$ne": None}, "plan": "std"}),
        ("/admin/tenants", {"name": "inj", "plan": {"$gt": ""}}),
        ("/admin/tenants", {"name": ["acme"], "plan": "std"}),
        ("/admin/plans", {"name": {"$ne": None}}),
        ("/admin/plans", {"name": "inj", "models": {"$ne": None}}),
        (NEW_KEY, {"name": {"$ne": None}}),
        (NEW_KEY, {"name": "inj", "scopes": [{"$ne": None}]}),
        (NEW_KEY, {"name": 1}),
    ],
    ids=lambda v: v if isinstance(v, str) else json.dumps(v),
)
async def test_json_operators_in_place_of_strings_are_refused(
    world: World, path: str, body: dict[str, Any]
) -> None:
    before = await records(world)
    answer = await call_rest(world, "POST", path, world.auth("admin"), body)
    assert answer.status == 422, answer.text
    await _assert_intact(world, before, [])


async def test_like_wildcards_in_usage_filters_match_nothing(world: World) -> None:
    admin = world.auth("admin")
    everything = await call_rest(world, "GET", "/admin/usage", admin, params={"group_by": ""})
    assert everything.json()["rows"], "there is usage to match"
    for param in ("tenant", "key", "model"):
        for pattern in ("%", "_%", "%' OR '1'='1", "*", ".*"):
            answer = await call_rest(world, "GET", "/admin/usage", admin, params={param: pattern})
            assert answer.status == 200 and answer.json()["rows"] == [], (param, pattern)


_FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_TEXTS = st.sampled_from(ATTACKS) | st.text(max_size=80)


@_FUZZ
@given(name=_TEXTS, what=st.sampled_from(["tenant", "plan", "key"]))
async def test_no_admin_name_gets_a_server_error_or_a_stray_record(
    world: World, name: str, what: str
) -> None:
    path, body = {
        "tenant": ("/admin/tenants", {"name": name, "plan": "std"}),
        "plan": ("/admin/plans", {"name": name}),
        "key": (NEW_KEY, {"name": name}),
    }[what]
    admin = world.auth("admin")
    before = len((await call_rest(world, "GET", path, admin)).json())

    answer = await call_rest(world, "POST", path, admin, body)

    assert answer.status in (201, 400, 409, 422), answer.text
    if answer.status == 201:
        assert _legal_name(name), name
        assert answer.json()["name"] == name  # stored as given
    else:
        assert set(answer.json()) & {"error", "detail"}
    after = len((await call_rest(world, "GET", path, admin)).json())
    assert after == before + (answer.status == 201)


_PARAM = st.none() | _TEXTS


@_FUZZ
@given(
    tenant=_PARAM,
    key=_PARAM,
    model=_PARAM,
    group_by=_PARAM | st.sampled_from(["day,tenant,key,model,version", "key", ""]),
    since=_PARAM,
    until=_PARAM,
    who=st.sampled_from(["acme_ops", "admin"]),
)
async def test_no_usage_query_gets_a_server_error_or_another_tenants_rows(
    world: World,
    tenant: str | None,
    key: str | None,
    model: str | None,
    group_by: str | None,
    since: str | None,
    until: str | None,
    who: str,
) -> None:
    params = {"tenant": tenant, "key": key, "model": model, "group_by": group_by}
    params |= {"since": since, "until": until}
    sent = {k: v for k, v in params.items() if v is not None}

    answer = await call_rest(world, "GET", "/admin/usage", world.auth(who), params=sent)

    if answer.status == 431:  # a query of several 5,000-character attacks passes the
        # 16 KiB limit on a request's line and headers (api/rest/http_protocol.py)
        assert len(urlencode(sent)) > 8 * 1024, sent
        assert set(answer.json()) == {"error"}
        return
    assert answer.status in (200, 400, 404), answer.text
    if answer.status != 200:
        assert set(answer.json()) == {"error"}
        return
    if who == "acme_ops":
        assert_nothing_of_globex(world, answer.text)
    known = {"ten_acme", "ten_globex", "key_acme_ops", "key_globex_ops", "doubler", "globex-only"}
    if any(v not in known for v in (tenant, key, model) if v):
        assert answer.json()["rows"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param(
            "POST",
            "/admin/tenants",
            {"name": "nl\n", "plan": "std"},
            id="tenant-name",
        ),
        pytest.param(
            "POST",
            "/admin/plans",
            {"name": "nl\n"},
            id="plan-name",
        ),
        pytest.param(
            "POST",
            NEW_KEY,
            {"name": "nl\n"},
            id="key-name",
        ),
        pytest.param(
            "POST",
            NEW_KEY,
            {"scopes": ["infer:doubler\n"]},
            id="key-scope",
        ),
        pytest.param(
            "PUT",
            "/admin/prices/model:doubler%0A",
            {"per_1k_units": 0},
            id="price-target",
        ),
    ],
)
async def test_a_trailing_newline_is_refused(
    world: World, method: str, path: str, body: dict[str, Any]
) -> None:
    """A '$' anchor also matches before a final newline: names, scopes and price targets
    are checked with fullmatch, so "acme\n" is not a legal name."""
    answer = await call_rest(world, method, path, world.auth("admin"), body)
    assert answer.status == 400, answer.text
