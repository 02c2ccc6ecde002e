"""``/openapi.json``: one document of every route the server answers, and only of those.

Both directions are checked against the running server: every row of the REST route table
(methods included), every route answered before it and every route of the admin app is in
the document; every path and method in the document is answered over HTTP (not a 404 for
want of a route, not a 405). The document and its pages need no credential, as
``/admin/openapi.json`` and ``/admin/docs`` never did.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from modelgate import __version__
from modelgate.api.openapi.document import DOC_PAGES, build_document
from modelgate.api.openapi.operations import EXPANDED, UNDOCUMENTED
from modelgate.api.rest.app import RestApp
from modelgate.api.rest.routes import ANY
from modelgate.api.rest.routes import Route as TableRoute
from modelgate.errors import ModelgateError
from modelgate.server import Server
from tests.api.openapi_server import ADMIN, openapi_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
METHODS = ("get", "post", "put", "patch", "delete")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with openapi_server(tmp_path_factory.mktemp("data")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    url = f"http://127.0.0.1:{server.http_port}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def document(http: httpx.AsyncClient) -> dict[str, Any]:
    answer = await http.get("/openapi.json")  # no credential
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def rest_app(server: Server) -> RestApp:
    assert server.components is not None and server.components.rest_app is not None
    return server.components.rest_app


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m in METHODS}


async def test_the_document_says_what_it_is(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == __version__
    assert document["servers"] == [
        {"url": "/", "description": document["servers"][0]["description"]}
    ]
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schemes["oauth2"]["flows"]["clientCredentials"]["tokenUrl"] == "/oauth/token"
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][A-Za-z]+", i) for i in ids), ids
    # every body is a named schema, so that a generated SDK names its types
    for ops in document["paths"].values():
        for op in ops.values():
            for content in op.get("requestBody", {}).get("content", {}).values():
                if content["schema"].get("type") != "string":
                    assert "$ref" in json.dumps(content["schema"]), op["operationId"]


async def test_the_document_and_its_pages_need_no_credential(http: httpx.AsyncClient) -> None:
    docs = await http.get("/docs")
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text
    assets = re.findall(r"""(?:src|href)=["'](/docs/static/[^"']+)""", docs.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:  # served here: no CDN
        assert (await http.get(asset)).status_code == 200, asset
    assert "cdn" not in docs.text.lower()
    redoc = await http.get("/redoc")
    assert redoc.status_code == 200 and "/docs/static/redoc.standalone.js" in redoc.text
    assert (await http.get("/docs/static/redoc.standalone.js")).status_code == 200
    # the same rule as the admin API's own document
    assert (await http.get("/admin/openapi.json")).status_code == 200
    assert (await http.get("/v2/models")).status_code == 404
    assert (await http.get("/v1/models")).status_code == 401  # the API itself still asks


async def test_every_route_the_server_answers_is_documented(
    server: Server, document: dict[str, Any]
) -> None:
    app = rest_app(server)
    documented = operations(document)
    for template, route in app.routes.items():
        if template in UNDOCUMENTED:
            continue
        if template in EXPANDED:
            continue  # the next test
        for method in route.handlers:
            assert method != ANY
            if method == "GET" and template.endswith("/infer"):
                assert app.service.cache is not None  # this server has a result cache
            assert (method, template) in documented, f"{method} {template}"
    for path in app.front:
        if path not in DOC_PAGES:
            assert ("GET", path) in documented or ("POST", path) in documented, path
    admin = app.admin_app
    for route in getattr(admin, "routes", ()):
        if isinstance(route, Mount) or not getattr(route, "include_in_schema", True):
            assert route.path.startswith(("/admin/static", "/admin/docs", "/admin/redoc",
                                          "/admin/openapi.json", "/docs/"))  # fmt: skip
            continue
        assert isinstance(route, APIRoute | Route)
        for method in route.methods or ():
            assert (method, route.path) in documented, f"{method} {route.path}"


async def test_a_route_without_an_operation_fails_the_document(server: Server) -> None:
    app = rest_app(server)
    table = app.routes
    app.routes = {
        **table,
        "/v2/new/route": TableRoute({"GET": table["/v2"].handlers["GET"]}, "GET"),
    }
    try:
        with pytest.raises(LookupError, match="GET /v2/new/route has no entry"):
            build_document(app)
    finally:
        app.routes = table
    app.front["/undocumented"] = app.front["/openapi.json"]
    try:
        with pytest.raises(LookupError, match="/undocumented is answered"):
            build_document(app)
    finally:
        del app.front["/undocumented"]


async def test_every_job_route_is_documented(server: Server, document: dict[str, Any]) -> None:
    """``/v1/jobs/...`` is routed by api/rest/jobs.py: every path it answers (every path of
    up to three segments from the words it knows and others) is documented, with exactly
    the methods it answers."""
    jobs = rest_app(server).jobs
    assert jobs is not None
    documented = {(m, p) for m, p in operations(document) if p.startswith("/v1/jobs")}
    assert {p for _, p in documented} == set(EXPANDED["/v1/jobs/..."])
    words = ["", "job_1", "results", "cancel", "x", "jobs", "items"]
    shapes = [[]] + [[a] for a in words] + [[a, b] for a in words for b in words]
    shapes += [[a, b, c] for a in words for b in words for c in words]
    answered = 0
    for parts in shapes:
        try:
            handlers = jobs.route(parts or [""])
        except ModelgateError:
            continue
        answered += 1
        path = "/".join(["/v1/jobs", *parts]).rstrip("/")
        template = re.sub(r"^/v1/jobs/[^/]+", "/v1/jobs/{job_id}", path)
        assert {m for m, p in documented if p == template} == set(handlers), path
    assert answered > len(EXPANDED["/v1/jobs/..."])


async def test_every_documented_route_is_answered(
    http: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    """Each path and method of the document, with real names in it, reaches a route: no
    405 and no 404 for want of a route (a missing resource may still be 404)."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    plan = await http.post("/admin/plans", json={"name": "openapi"}, headers=auth)
    assert plan.status_code == 201, plan.text
    body = {"name": "openapi-routes", "plan": "openapi"}
    tenant = await http.post("/admin/tenants", json=body, headers=auth)
    assert tenant.status_code == 201, tenant.text
    tenant_id = tenant.json()["id"]
    key = await http.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "k"}, headers=auth)
    assert key.status_code == 201, key.text
    job = await http.post("/v1/jobs", json={"model": "doubler", "request": ROW}, headers=auth)
    assert job.status_code == 200, job.text
    values = {
        "model": "doubler",
        "version": "1",
        "job_id": job.json()["id"],
        "tenant_id": tenant_id,
        "key_id": key.json()["id"],
        "subject": "alice",
        "target": "default",
        "run_id": "run_20260101T000000_000000",
    }
    for method, template in sorted(operations(document)):
        path = re.sub(r"\{(\w+)\}", lambda m: values[m[1]], template)
        kwargs: dict[str, Any] = {"headers": auth}
        if template.endswith("/infer") and method == "GET":
            path = path.replace("/doubler/", "/cached-doubler/")
            query = base64.urlsafe_b64encode(json.dumps(ROW).encode()).rstrip(b"=")
            kwargs["params"] = {"input": query.decode()}
        elif template.endswith("/infer"):
            kwargs["json"] = ROW
        elif template == "/oauth/token":
            kwargs = {"data": {"grant_type": "client_credentials"}, "auth": ("admin", ADMIN)}
        elif method in ("POST", "PUT"):
            kwargs["json"] = {}
        answer = await http.request(method, path, **kwargs)
        assert answer.status_code != 405, f"{method} {path}: {answer.text}"
        if answer.status_code == 404:
            text = answer.text.lower()
            assert "route" not in text and "not found" not in text, f"{method} {path}: {text}"
