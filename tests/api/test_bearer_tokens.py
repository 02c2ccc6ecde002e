"""JWT bearer tokens on the wire: a token from a trusted issuer runs as the tenant it names,
with its scopes and that tenant's plan; anything else is 401."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.core.access.identity import Plan, Tenant
from modelgate.identity.jwt import TokenIssuer, generate_signing_key
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

ISSUER, AUDIENCE = "https://idp.example.test", "modelgate"
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
SIGNER = TokenIssuer(generate_signing_key("ES256"), kid="k1", issuer=ISSUER, audience=AUDIENCE)
STRANGER = TokenIssuer(generate_signing_key("ES256"), kid="k1", issuer=ISSUER, audience=AUDIENCE)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    components: Components = build_components(
        Settings(
            model_repository=FIXTURE_MODELS,
            data_dir=tmp_path_factory.mktemp("jwt"),
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            jwt_public_keys={"k1": SIGNER.public_key_pem},
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
    transport = httpx.ASGITransport(app=components.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
    await components.close()


def _unsigned(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_a_token_runs_as_its_tenant_with_its_scopes(client: httpx.AsyncClient) -> None:
    token = SIGNER.issue("svc-batch", "ten_acme", ["infer"])
    response = await client.post(
        "/v2/models/doubler/infer", json=ROW, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    metadata = await client.get("/v2/models/doubler", headers={"Authorization": f"Bearer {token}"})
    assert metadata.status_code == 403  # no models:read in the token


@pytest.mark.parametrize(
    "token",
    [
        STRANGER.issue("svc", "ten_acme", ["infer"]),  # signed by a key we do not trust
        SIGNER.issue("svc", "ten_nobody", ["infer"]),  # a tenant that does not exist
        _unsigned(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": "x",
                "tenant": "ten_acme",
                "scope": "infer",
                "exp": 4102444800,
            }
        ),
        SIGNER.issue("svc", "ten_acme", ["infer"])[:-4] + "AAAA",  # tampered signature
    ],
)
async def test_untrusted_tokens_are_refused(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post(
        "/v2/models/doubler/infer", json=ROW, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401, response.text
    assert token not in response.text
