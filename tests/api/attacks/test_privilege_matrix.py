"""The tenant-privilege matrix: for every route that can change server state, a key of tenant
acme holding every tenant scope cannot change tenant globex's resources nor global ones
(plans, prices, other tenants, model deployments, manifests and their overrides), and is
told 403 or 404; afterwards nothing of globex's and nothing global has changed.

The routes come from the server itself: the state-changing operations of the admin API's
served OpenAPI document, and the REST routes (OIP, OpenAI, jobs, feedback, OAuth) that the
docs and the REST modules' docstrings name, each probed with every state-changing method.
A route that exists and has no entry in :data:`MATRIX` fails the test, and so does an entry
for a route that does not exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.api.attacks.world import ROW, World, call_rest, records

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).parents[3]
STATE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
ATTACKER = "acme_ops"  # every tenant scope (world.ACME_SCOPES)
JOB = "\x1bJOB\x1b"  # globex's job id, made in the test
FORBIDDEN_OR_HIDDEN = {403, 404}

#: (method, route) -> the attacks on it: (case, path, body, expected statuses). A body that
#: is a string is sent as a form (the token endpoint).
MATRIX: dict[tuple[str, str], list[tuple[str, str, Any, set[int]]]] = {
    # -- admin API: global records ---------------------------------------------------------
    ("POST", "/admin/plans"): [("new-plan", "/admin/plans", {"name": "mine"}, {403})],
    ("POST", "/admin/tenants"): [
        ("new-tenant", "/admin/tenants", {"name": "evil", "plan": "std"}, {403})
    ],
    ("PUT", "/admin/prices/{target}"): [
        ("set-default-price", "/admin/prices/default", {"per_1k_units": 0}, {403}),
        ("set-model-price", "/admin/prices/model:globex-only", {"per_1k_units": 9}, {403}),
    ],
    ("DELETE", "/admin/prices/{target}"): [
        ("delete-default-price", "/admin/prices/default", None, {403})
    ],
    ("PUT", "/admin/models/{model}/deployment"): [
        ("deploy-shared", "/admin/models/doubler/deployment", {"default_version": 1}, {403}),
        ("deploy-foreign", "/admin/models/globex-only/deployment", {"default_version": 1}, {403}),
    ],
    ("POST", "/admin/models/{model}/deployment/promote"): [
        ("promote-shared", "/admin/models/doubler/deployment/promote", {"version": 2}, {403})
    ],
    ("POST", "/admin/models/{model}/deployment/rollback"): [
        ("rollback-foreign", "/admin/models/globex-only/deployment/rollback", None, {403})
    ],
    ("POST", "/admin/models/{model}/learn"): [  # the learning loop: operators only
        ("learn-shared", "/admin/models/doubler/learn", {}, {403}),
        ("learn-foreign", "/admin/models/globex-only/learn", {}, {403}),
    ],
    # -- admin API: another tenant's records, and privileges the key does not hold ---------
    ("POST", "/admin/tenants/{tenant_id}/keys"): [
        ("key-in-globex", "/admin/tenants/ten_globex/keys", {"scopes": ["infer"]}, {404}),
        (
            "operator-key-for-itself",
            "/admin/tenants/ten_acme/keys",
            {"scopes": ["tenants:admin"]},
            {403},
        ),
        (
            "configure-key-for-itself",
            "/admin/tenants/ten_acme/keys",
            {"scopes": ["models:configure"]},
            {400, 403},
        ),
    ],
    ("POST", "/admin/keys/{key_id}/revoke"): [
        ("revoke-globex-key", "/admin/keys/key_globex_ops/revoke", None, {404})
    ],
    ("POST", "/admin/keys/{key_id}/rotate"): [
        ("rotate-globex-key", "/admin/keys/key_globex_ops/rotate", {"overlap_hours": 0}, {404})
    ],
    ("PUT", "/admin/tenants/{tenant_id}/payload-logging"): [
        (
            "globex-consent",
            "/admin/tenants/ten_globex/payload-logging",
            {"enabled": True},
            {404},
        )
    ],
    ("DELETE", "/admin/subjects/{subject}"): [
        ("erase-in-globex", "/admin/subjects/s-1?tenant=ten_globex", None, {404})
    ],
    # -- OIP -------------------------------------------------------------------------------
    ("POST", "/v2/repository/models/{model}/load"): [
        ("load-foreign", "/v2/repository/models/globex-only/load", None, {404}),
        # a shared model's (re)load makes every tenant wait: the operator's (model_control.py)
        ("load-shared", "/v2/repository/models/doubler/load", None, {403}),
        (
            "override-shared",  # what runs is the operator's decision (models:configure)
            "/v2/repository/models/doubler/load",
            {"parameters": {"config": {"max_batch_size": 1}}},
            {403},
        ),
        (
            "override-tenants",
            "/v2/repository/models/doubler/load",
            {"parameters": {"config": {"tenants": ["ten_acme"]}}},
            {400, 403},
        ),
    ],
    ("POST", "/v2/repository/models/{model}/unload"): [
        ("unload-foreign", "/v2/repository/models/globex-only/unload", None, {404}),
        ("unload-shared", "/v2/repository/models/doubler/unload", None, {403}),
    ],
    ("POST", "/v2/repository/index"): [],  # reads only (test_cross_tenant: no foreign names)
    ("POST", "/v2/models/{model}/infer"): [
        ("infer-foreign", "/v2/models/globex-only/infer", ROW, {404})
    ],
    ("POST", "/v2/models/{model}/versions/{version}/infer"): [
        ("infer-foreign-version", "/v2/models/globex-only/versions/1/infer", ROW, {404})
    ],
    # -- OpenAI, jobs, feedback ------------------------------------------------------------
    ("POST", "/v1/embeddings"): [
        ("embed-foreign", "/v1/embeddings", {"model": "globex-only", "input": "x"}, {404})
    ],
    ("POST", "/v1/jobs"): [
        ("job-on-foreign", "/v1/jobs", {"model": "globex-only", "request": ROW}, {404}),
    ],
    ("POST", "/v1/jobs/{id}/cancel"): [
        ("cancel-globex-job", f"/v1/jobs/{JOB}/cancel", None, {404}),
    ],
    ("POST", "/v1/feedback"): [
        ("label-globex-request", "/v1/feedback", {"request_id": "globex-req", "label": 1}, {404})
    ],
    # -- OAuth -----------------------------------------------------------------------------
    ("POST", "/oauth/token"): [
        (
            "token-with-operator-scope",
            "/oauth/token",
            "grant_type=client_credentials&client_id=key_acme_ops&scope=tenants:admin",
            {400},
        ),
        (
            "token-as-globex",
            "/oauth/token",
            "grant_type=client_credentials&client_id=key_globex_ops",
            {401},
        ),
    ],
}

_DOCUMENTED = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) +(/(?:v1|v2|oauth)/[A-Za-z0-9_/{}<>.:-]*)")
_PLACEHOLDER = re.compile(r"^[{<].*[}>]$")


def documented_rest_routes() -> set[str]:
    """The REST route templates the docs and the REST modules' docstrings name, with their
    placeholders named after the segment before them."""
    texts = [p.read_text() for p in (ROOT / "docs").glob("*.md")]
    texts += [p.read_text() for p in (ROOT / "src/modelgate/api/rest").glob("*.py")]
    routes = set()
    for text in texts:
        for _method, path in _DOCUMENTED.findall(text):
            segments = path.rstrip(".:,").split("/")
            named = []
            for i, segment in enumerate(segments):
                before = segments[i - 1] if i else ""
                if before == "models" and segment != "stats":  # a placeholder or an example
                    segment = "{model}"
                elif before == "versions" and segments[i - 2] == "{model}":
                    segment = "{version}"
                elif _PLACEHOLDER.match(segment):
                    segment = "{id}"
                named.append(segment)
            routes.add("/".join(named))
    return routes


def concrete(route: str) -> str:
    return (
        route.replace("{model}", "doubler")
        .replace("{version}", "1")
        .replace("{id}", "job_probe")
        .replace("{target}", "default")
    )


async def route_exists(world: World, method: str, route: str) -> bool:
    """Does ``method`` on ``route`` reach a handler (anything but 405 or "no route")?"""
    answer = await call_rest(world, method, concrete(route), world.auth(ATTACKER), {})
    return answer.status != 405 and not (
        answer.status == 404 and re.search(r"no (such )?route", answer.text)
    )


async def state_changing_routes(world: World) -> set[tuple[str, str]]:
    document = (await world.http.get("/admin/openapi.json")).json()
    found = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method.upper() in STATE_METHODS
    }
    for route in documented_rest_routes() | {r for _m, r in MATRIX if not r.startswith("/admin")}:
        for method in STATE_METHODS:
            if await route_exists(world, method, route):
                found.add((method, route))
    return found


async def test_every_state_changing_route_has_a_matrix_entry(world: World) -> None:
    found = await state_changing_routes(world)
    assert found - set(MATRIX) == set(), "routes without a privilege-matrix entry"
    assert set(MATRIX) - found == set(), "matrix entries for routes that do not exist"


async def globex_state(world: World, job: str) -> dict[str, Any]:
    globex = world.auth("globex_ops")
    job_state = await call_rest(world, "GET", f"/v1/jobs/{job}", globex)
    ready = await call_rest(world, "GET", "/v2/models/globex-only/ready", globex)
    consent = await call_rest(world, "GET", "/admin/tenants/ten_globex/payload-logging", globex)
    deployments = [
        (await call_rest(world, "GET", f"/admin/models/{m}/deployment", world.auth("admin"))).text
        for m in ("doubler", "globex-only")
    ]
    return {
        "records": await records(world),
        "job": job_state.json()["status"] if job_state.status == 200 else job_state.status,
        "ready": ready.status,
        "consent": consent.json(),
        "deployments": deployments,
    }


async def test_a_tenant_changes_nothing_of_others_nor_anything_global(world: World) -> None:
    # a job of globex's that stays queued: a version that is not loaded is still accepted
    made = await call_rest(
        world,
        "POST",
        "/v1/jobs",
        world.auth("globex_ops"),
        {"model": "globex-only", "request": ROW, "priority": 0},
    )
    assert made.status in (200, 201, 202), made.text
    job = made.json()["id"]
    before = await globex_state(world, job)
    failures = []
    for (method, route), attacks in MATRIX.items():
        for case, path, body, expected in attacks:
            path = path.replace(JOB, job)
            if isinstance(body, str):  # a form: the token endpoint, with the attacker's secret
                secret = world.secrets[ATTACKER]
                response = await world.http.request(
                    method,
                    path,
                    content=f"{body}&client_secret={secret}",
                    headers={"content-type": "application/x-www-form-urlencoded"},
                )
                status, text = response.status_code, response.text
            else:
                answer = await call_rest(world, method, path, world.auth(ATTACKER), body)
                status, text = answer.status, answer.text
            if status not in expected:
                failures.append(f"{case} ({method} {route}): {status} {text[:200]}")
    assert failures == []
    after = await globex_state(world, job)
    # a job may have run meanwhile: only its cancellation would be the attacker's doing
    assert after.pop("job") != "cancelled"
    before.pop("job")
    assert after == before
