"""OAuth2 client credentials: an API key trades for a short-lived token that works as a
bearer credential; bad clients, grants and scopes get RFC 6749 errors."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.identity.jwt import generate_signing_key
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Any]]:
    components: Components = build_components(
        Settings(
            model_repository=FIXTURE_MODELS,
            data_dir=tmp_path_factory.mktemp("oauth"),
            jwt_issuer="https://modelgate.test",
            jwt_signing_key=SecretStr(generate_signing_key("ES256")),
        )
    )
    await components.open()
    await components.start()
    assert components.state is not None
    store = components.state.identity
    await store.create_plan(Plan(name="basic"))
    await store.create_tenant(
        Tenant(id="ten_acme", name="acme", plan="basic", created_at=datetime.now(UTC))
    )
    issued = issue_key()
    await store.create_key(
        ApiKeyRecord(
            id="key_svc",
            tenant_id="ten_acme",
            name="svc",
            prefix=issued.prefix,
            key_hash=issued.key_hash,
            scopes=("infer", "models:read"),
            created_at=datetime.now(UTC),
        )
    )
    transport = httpx.ASGITransport(app=components.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield {"client": client, "secret": issued.secret}
    await components.close()


async def test_client_credentials_give_a_working_bearer_token(world: dict[str, Any]) -> None:
    client: httpx.AsyncClient = world["client"]
    response = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "key_svc",
            "client_secret": world["secret"],
            "scope": "infer",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 900
    assert answer["scope"] == "infer"
    bearer = {"Authorization": f"Bearer {answer['access_token']}"}
    assert (
        await client.post("/v2/models/doubler/infer", json=ROW, headers=bearer)
    ).status_code == 200
    # The token holds only the scope asked for.
    assert (await client.get("/v2/models/doubler", headers=bearer)).status_code == 403
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == ["modelgate"] and "d" not in jwks["keys"][0]


async def test_basic_authentication_of_the_client(world: dict[str, Any]) -> None:
    client: httpx.AsyncClient = world["client"]
    basic = base64.b64encode(f"key_svc:{world['secret']}".encode()).decode()
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200
    assert set(response.json()["scope"].split()) == {"infer", "models:read"}


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
        (
            {
                "grant_type": "client_credentials",
                "client_id": "key_svc",
                "client_secret": "mg_live_wrongwrongwr_" + "x" * 32,
            },
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "key_other", "client_secret": None},
            401,
            "invalid_client",
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": "key_svc",
                "client_secret": None,
                "scope": "infer tenants:admin",
            },
            400,
            "invalid_scope",
        ),
    ],
)
async def test_bad_requests_get_rfc6749_errors(
    world: dict[str, Any], form: dict[str, Any], status: int, error: str
) -> None:
    form = {
        k: (world["secret"] if k == "client_secret" and v is None else v) for k, v in form.items()
    }
    response = await world["client"].post("/oauth/token", data=form)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert world["secret"] not in response.text
