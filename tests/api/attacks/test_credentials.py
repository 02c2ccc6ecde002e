"""Credentials x routes: missing, malformed, unknown, expired, revoked, another tenant's, a
disabled tenant's, and tampered or forged JWTs, against OIP REST inference and metadata,
OpenAI ``/v1/models``, an admin route and gRPC ``ModelInfer``."""

from __future__ import annotations

import pytest

from tests.api.attacks.world import (
    ROW,
    Answer,
    World,
    call_grpc,
    call_rest,
    credential_for,
    infer_request,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: (credential, expected status, expected on /v1/models where it differs)
CREDENTIAL_CASES: list[tuple[str, int, int | None]] = [
    ("valid-key", 200, None),
    ("valid-key-x-api-key", 200, None),
    ("valid-jwt", 200, None),
    ("none", 401, None),
    ("empty-bearer", 401, None),
    ("basic-scheme", 401, None),
    ("malformed-key", 401, None),
    ("unknown-key", 401, None),
    ("unknown-key-x-api-key", 401, None),
    ("unknown-bearer-beside-valid-x-api-key", 401, None),  # no falling back to the other
    ("wrong-secret-known-prefix", 401, None),
    ("expired-key", 401, None),
    ("revoked-key", 401, None),
    ("admin-key-truncated", 401, None),
    ("other-tenant-key", 404, 200),  # /v1/models answers, without acme's model
    ("other-tenant-jwt", 404, 200),
    ("disabled-tenant-key", 403, None),
    ("disabled-tenant-jwt", 403, None),
    ("jwt-flipped-signature", 401, None),
    ("jwt-edited-tenant-claim", 401, None),
    ("jwt-alg-none", 401, None),
    ("jwt-hs256-signed-with-public-key", 401, None),
    ("jwt-expired", 401, None),
    ("jwt-unknown-kid", 401, None),
    ("jwt-foreign-signing-key", 401, None),
    ("jwt-wrong-audience", 401, None),
    ("jwt-unknown-tenant", 401, None),
    ("jwt-operators-tenant", 401, None),
]
#: each reaches something of acme's: its private model, its tenant's keys
ROUTES = ["rest-infer", "rest-metadata", "openai-models", "admin-keys", "grpc-infer"]


async def _send(world: World, route: str, credential: list[tuple[str, str]]) -> Answer:
    headers = dict(credential)
    if route == "rest-infer":
        return await call_rest(world, "POST", "/v2/models/acme-only/infer", headers, ROW)
    if route == "rest-metadata":
        return await call_rest(world, "GET", "/v2/models/acme-only", headers)
    if route == "openai-models":
        return await call_rest(world, "GET", "/v1/models", headers)
    if route == "admin-keys":
        return await call_rest(world, "GET", "/admin/tenants/ten_acme/keys", headers)
    return await call_grpc(world, "ModelInfer", infer_request("acme-only"), tuple(credential))


_OPENAI_CODES = {401: "invalid_api_key", 403: "insufficient_permissions"}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("who", "status", "models_status"), CREDENTIAL_CASES)
async def test_credentials_are_checked_on_every_protocol(
    world: World, who: str, status: int, models_status: int | None, route: str
) -> None:
    credential = credential_for(world, who)
    expected = models_status if route == "openai-models" and models_status else status

    answer = await _send(world, route, credential)

    assert answer.status == expected, answer.text
    for _, value in credential:  # what was sent is never echoed
        assert value.split()[-1] not in answer.text
    if expected == 200:
        if route == "openai-models":
            listed = {m["id"] for m in answer.json()["data"]}
            assert ("acme-only" in listed) is (status == 200), listed
        return
    if route == "grpc-infer":
        assert answer.text  # the details say why
        return
    body = answer.json()
    if route == "openai-models":
        assert set(body) == {"error"}
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == _OPENAI_CODES[expected]
    else:
        assert set(body) == {"error"} and isinstance(body["error"], str), body
    if expected == 401:
        assert answer.headers is not None
        assert answer.headers["www-authenticate"].startswith("Bearer")
