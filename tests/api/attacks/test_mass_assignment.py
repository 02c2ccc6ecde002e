"""Mass assignment: privilege fields in admin bodies are refused and change nothing; a key
(or a token, or ``/oauth/token``) cannot mint more rights than it holds."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.attacks.world import SIGNER, World, call_rest, records

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: where a body goes, and a body that passes on its own there
ENDPOINTS = {
    "tenant": ("POST", "/admin/tenants", {"name": "m", "plan": "std"}),
    "key": ("POST", "/admin/tenants/ten_acme/keys", {"name": "m"}),
    "rotate": ("POST", "/admin/keys/key_acme_prober/rotate", {"overlap_hours": 1}),
    "plan": ("POST", "/admin/plans", {"name": "m"}),
    "price": ("PUT", "/admin/prices/default", {"per_1k_units": 1}),
}
#: who may send each body: the operator, or a tenant's key with keys:admin
ACTOR = {
    "tenant": "admin",
    "plan": "admin",
    "price": "admin",
    "key": "acme_keyadmin",
    "rotate": "acme_keyadmin",
}
NOW = "2030-01-01T00:00:00Z"
#: fields a body might try to set that belong to the server; each answers 422
SMUGGLED: dict[str, list[tuple[str, Any]]] = {
    "tenant": [
        ("id", "ten_chosen"),
        ("tenant_id", "ten_acme"),
        ("disabled", False),
        ("scopes", ["tenants:admin"]),
        ("created_at", NOW),
        ("plan_id", "std"),
    ],
    "key": [
        ("tenant_id", "ten_globex"),
        ("id", "key_chosen"),
        ("key_hash", "0" * 64),
        ("prefix", "mg_live_aaaaaaaaaaaa"),
        ("secret", "mg_live_aaaaaaaaaaaa_" + "a" * 32),
        ("revoked_at", None),
        ("last_used_at", NOW),
        ("created_at", NOW),
        ("kind", "admin"),
        ("disabled", False),
    ],
    "rotate": [("scopes", ["tenants:admin"]), ("tenant_id", "ten_globex"), ("id", "key_x")],
    "plan": [("created_at", NOW), ("id", "p")],
    "price": [("updated_at", NOW), ("target", "model:doubler"), ("currency", "EUR")],
}
#: (case, who, endpoint, changes to its body, status)
MASS_ASSIGNMENT: list[tuple[str, str, str, dict[str, Any], int]] = [
    *(
        (f"{where}+{name}", ACTOR[where], where, {name: value}, 422)
        for where, fields in SMUGGLED.items()
        for name, value in fields
    ),
    *(
        (f"{who}-grants-{scope}", who, "key", {"scopes": ["infer", scope]}, 403)
        for who in ("acme_keyadmin", "keyadmin-jwt")
        for scope in ("tenants:admin", "audit:read", "usage:read", "models:write")
    ),
    ("key+scopes-as-a-string", "acme_keyadmin", "key", {"scopes": "tenants:admin"}, 422),
    ("key+an-unknown-scope", "acme_keyadmin", "key", {"scopes": ["root"]}, 400),
    ("plan+priority-10", "admin", "plan", {"priority": 10}, 422),
    ("plan+priority-minus-1", "admin", "plan", {"priority": -1}, 422),
    ("tenant-by-a-tenant-key", "acme_keyadmin", "tenant", {}, 403),
    ("plan-by-a-tenant-key", "acme_keyadmin", "plan", {}, 403),
    ("price-by-a-tenant-key", "acme_ops", "price", {}, 403),
]


@pytest.mark.parametrize(
    ("who", "where", "changes", "status"),
    [pytest.param(*row[1:], id=row[0]) for row in MASS_ASSIGNMENT],
)
async def test_bodies_cannot_assign_privileges(
    world: World, who: str, where: str, changes: dict[str, Any], status: int
) -> None:
    method, path, body = ENDPOINTS[where]
    if who == "keyadmin-jwt":
        token = SIGNER.issue("svc-keys", "ten_acme", ["infer", "keys:admin"])
        headers = {"Authorization": f"Bearer {token}"}
    else:
        headers = world.auth(who)
    before = await records(world)

    answer = await call_rest(world, method, path, headers, {**body, **changes})

    assert answer.status == status, answer.text
    assert await records(world) == before


@pytest.mark.parametrize("where", ["tenant", "key", "plan", "price"])
async def test_the_bodies_pass_without_the_smuggled_fields(world: World, where: str) -> None:
    """The control for the table above: its 4xx answers are about the fields it adds."""
    method, path, body = ENDPOINTS[where]
    body = {**body, "name": f"control-{where}"} if "name" in body else body
    answer = await call_rest(world, method, path, world.auth(ACTOR[where]), body)
    assert answer.status in (200, 201), answer.text


#: (case, client id, whose secret, scope asked for, status, RFC 6749 error)
TOKEN_GRANTS = [
    ("another-keys-id", "key_globex_ops", "acme_ops", None, 401, "invalid_client"),
    ("a-scope-it-lacks", "key_acme_prober", "acme_prober", "keys:admin", 400, "invalid_scope"),
    ("revoked-key", "key_acme_revoked", "acme_revoked", None, 401, "invalid_client"),
    ("disabled-tenant", "key_dormant_ops", "dormant_ops", None, 401, "invalid_client"),
    ("a-token-as-secret", "svc-acme", "valid-jwt", None, 401, "invalid_client"),
    ("the-admin-key", "bootstrap-admin", "admin", None, 401, "invalid_client"),
]


@pytest.mark.parametrize(
    ("client_id", "secret", "scope", "status", "error"),
    [pytest.param(*case[1:], id=case[0]) for case in TOKEN_GRANTS],
)
async def test_the_token_endpoint_grants_no_more_than_the_key_holds(
    world: World, client_id: str, secret: str, scope: str | None, status: int, error: str
) -> None:
    form = {"grant_type": "client_credentials", "client_id": client_id}
    form |= {"client_secret": world.secrets[secret]} | ({"scope": scope} if scope else {})

    response = await world.http.post("/oauth/token", data=form)

    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert "access_token" not in response.json()
