"""The token endpoint and bearer tokens, hardened: ``GET /oauth/token`` is 405, a client that
authenticates twice (Basic and the form) is refused, ``exp: 1e308`` is refused, and a token
from an identity provider is an operator only when the configured operator claim says so,
while modelgate's own tokens keep the scopes of their key."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.identity.jwt import generate_signing_key
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

ISSUER, AUDIENCE = "https://modelgate.test", "modelgate"
IDP_PEM = generate_signing_key("ES256")
IDP_KEY = serialization.load_pem_private_key(IDP_PEM.encode(), None)
IDP_PUBLIC = (
    IDP_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def idp_token(**claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "someone@idp",
        "tenant": "ten_acme",
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    return jwt.encode(body, IDP_KEY, algorithm="ES256", headers={"kid": "idp1"})


async def _world(
    data_dir: Any, **settings: Any
) -> tuple[Components, httpx.AsyncClient, dict[str, str]]:
    components = build_components(
        Settings(
            model_repository=FIXTURE_MODELS,
            data_dir=data_dir,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            jwt_signing_key=SecretStr(generate_signing_key("ES256")),
            jwt_public_keys={"idp1": IDP_PUBLIC},
            **settings,
        )
    )
    await components.open()
    await components.start()
    assert components.state is not None
    store = components.state.identity
    await store.create_plan(Plan(name="basic"))
    now = datetime.now(UTC)
    for tenant in ("ten_acme", "ten_ops"):
        await store.create_tenant(Tenant(id=tenant, name=tenant, plan="basic", created_at=now))
    secrets = {}
    for key_id, tenant, scopes in (
        ("key_svc", "ten_acme", ("infer", "models:read")),
        ("key_ops", "ten_ops", ("tenants:admin",)),
    ):
        issued = issue_key()
        await store.create_key(
            ApiKeyRecord(
                id=key_id,
                tenant_id=tenant,
                name=key_id,
                prefix=issued.prefix,
                key_hash=issued.key_hash,
                scopes=scopes,
                created_at=now,
            )
        )
        secrets[key_id] = issued.secret
    transport = httpx.ASGITransport(app=components.rest_app)
    client = httpx.AsyncClient(transport=transport, base_url="http://test")
    return components, client, secrets


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    components, client, secrets = await _world(tmp_path_factory.mktemp("tokens"))
    yield client, secrets
    await client.aclose()
    await components.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ops_world(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    components, client, _secrets = await _world(
        tmp_path_factory.mktemp("tokens-ops"), jwt_operator_claim="groups=mg-ops"
    )
    yield client
    await client.aclose()
    await components.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
async def test_the_token_endpoint_answers_405_to_other_methods(
    world: tuple[httpx.AsyncClient, dict[str, str]], method: str
) -> None:
    client, _ = world
    response = await client.request(method, "/oauth/token")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    if method != "HEAD":
        assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "form",
    [
        {"client_secret": "mg_live_other"},  # a different secret in the body
        {"client_secret": None},  # the same secret twice is two methods still
        {"client_id": "key_other"},  # Basic names one client, the form another
    ],
)
async def test_basic_and_form_credentials_together_are_invalid_request(
    world: tuple[httpx.AsyncClient, dict[str, str]], form: dict[str, str | None]
) -> None:
    client, secrets = world
    secret = secrets["key_svc"]
    basic = base64.b64encode(f"key_svc:{secret}".encode()).decode()
    data = {"grant_type": "client_credentials"}
    data.update({k: (secret if v is None else v) for k, v in form.items()})
    response = await client.post(
        "/oauth/token", data=data, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert secret not in response.text


async def test_basic_with_the_same_client_id_in_the_form_is_fine(
    world: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, secrets = world
    basic = base64.b64encode(f"key_svc:{secrets['key_svc']}".encode()).decode()
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "key_svc"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "exp",
    [1e308, 10**20, int(time.time()) + 400 * 86_400, 1.8e9 + 0.5],
    ids=["1e308", "1e20", "in-400-days", "fractional"],  # the same in every xdist worker
)
async def test_absurd_expiry_is_refused(
    world: tuple[httpx.AsyncClient, dict[str, str]], exp: float
) -> None:
    client, _ = world
    response = await client.get(
        "/v2/models/doubler", headers=bearer(idp_token(exp=exp, scope="models:read"))
    )
    assert response.status_code == 401, response.text


async def test_an_ordinary_idp_token_still_works(
    world: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, _ = world
    response = await client.get(
        "/v2/models/doubler", headers=bearer(idp_token(scope="models:read"))
    )
    assert response.status_code == 200, response.text


async def test_an_idp_token_with_tenants_admin_is_no_operator(
    world: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, _ = world
    token = idp_token(scope="tenants:admin audit:read", groups=["mg-ops"])
    assert (await client.get("/admin/audit/verify", headers=bearer(token))).status_code == 403
    created = await client.post("/admin/plans", json={"name": "pwned"}, headers=bearer(token))
    assert created.status_code == 403
    tenants = await client.get("/admin/tenants", headers=bearer(token))
    assert {t["id"] for t in tenants.json()} <= {"ten_acme"}
    # audit:read is a tenant scope: kept, and the tenant sees its own trail only
    audit = await client.get("/admin/audit", headers=bearer(token))
    assert audit.status_code == 200
    assert all(r["tenant_id"] == "ten_acme" for r in audit.json())


async def test_modelgate_s_own_token_of_an_operator_key_keeps_tenants_admin(
    world: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, secrets = world
    issued = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "key_ops",
            "client_secret": secrets["key_ops"],
        },
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert (await client.get("/admin/audit/verify", headers=bearer(token))).status_code == 200


async def test_the_operator_claim_makes_an_idp_token_an_operator(
    ops_world: httpx.AsyncClient,
) -> None:
    operator = idp_token(scope="tenants:admin", groups=["staff", "mg-ops"])
    assert (await ops_world.get("/admin/audit/verify", headers=bearer(operator))).status_code == 200
    someone = idp_token(scope="tenants:admin", groups=["staff"])
    assert (await ops_world.get("/admin/audit/verify", headers=bearer(someone))).status_code == 403


async def test_a_malformed_operator_claim_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="jwt_operator_claim"):
        Settings(jwt_operator_claim="groups")
