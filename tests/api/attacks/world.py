"""What the attack modules share: the constants and attack strings, the :class:`World` (one
server, its tenants, keys, tokens, private models and usage), the forged tokens, one
protocol-neutral :class:`Answer` with a sender per protocol, and the helpers more than one
module uses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tritonclient.grpc import service_pb2

from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.core.admission.usage import UsageRecord
from modelgate.identity.jwt import TokenIssuer, generate_signing_key
from modelgate.server import Server

ADMIN = "admin-" + "k" * 26
ISSUER, AUDIENCE = "https://modelgate.attacks.test", "modelgate"
# RS256, so that the HS/RS confusion token can use the published public key as its secret.
SIGNING_KEY = generate_signing_key("RS256")
SIGNER = TokenIssuer(SIGNING_KEY, kid="modelgate", issuer=ISSUER, audience=AUDIENCE)
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
ALL_BUT_OPERATOR = ("infer", "models:read", "models:write", "keys:admin", "usage:read")
ACME_SCOPES = (*ALL_BUT_OPERATOR, "audit:read")
#: the documented rule for tenant, plan and key names (docs/security.md)
LEGAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}")
#: price targets (docs/usage.md)
LEGAL_TARGET = re.compile(r"default|(model|hardware):[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: where the keys that the operator's tables make go (a tenant of their own)
NEW_KEY = "/admin/tenants/ten_fuzz/keys"
INFER = "/v2/models/doubler/infer"

ATTACKS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    '"; DROP TABLE tenants; --',
    "'; DROP TABLE api_keys; --",
    "ten_acme' --",
    "%",
    "_",
    "%_%",
    "*",
    "\x00",
    "acme\x00admin",
    "a\nb",
    "\r\n\r\nHTTP/1.1 200 OK",
    "A" * 5000,
    "\u202eevil\u202c",
    "😀🔥💥",
    "名前",
    '{"$ne": null}',
    '{"$gt": ""}',
    "[]",
    "null",
    "../../../etc/passwd",
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
    "   ",
    "",
]
#: fields in a body also get a string far over any length limit
BODY_ATTACKS = [*ATTACKS, "B" * 200_000]

V = "\x1bVALUE\x1b"  # where a table row puts its id or attack string


# -- the world: one server, tenants, keys, tokens, private models, usage ----------------------


@dataclass
class World:
    server: Server
    http: httpx.AsyncClient
    stub: Any
    #: credential name -> the credential (keys by their id without "key_", tokens, "admin")
    secrets: dict[str, str]
    #: globex's ids that do not say "globex" (made through the admin API)
    foreign: set[str] = field(default_factory=set)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}

    def grpc_auth(self, who: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.secrets[who]}"),)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _forged(alg: str, tenant: str, sign: Callable[[bytes], bytes]) -> str:
    """A token for ``tenant`` with header ``alg``, signed by ``sign`` (not by the issuer)."""
    now = int(time.time())
    header = {"alg": alg, "typ": "JWT", "kid": "modelgate"}
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-forged", "tenant": tenant}
    claims |= {"scope": " ".join(ACME_SCOPES), "iat": now, "exp": now + 600}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _rs256(data: bytes) -> bytes:
    """A genuine signature by the server's own key, for claims its issuer refuses to sign."""
    key = serialization.load_pem_private_key(SIGNING_KEY.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def tokens() -> dict[str, str]:
    """The tokens by name: acme's valid one, globex's, a disabled tenant's, and forgeries."""
    scopes = list(ACME_SCOPES)

    def issuer(key: str = SIGNING_KEY, **changes: Any) -> TokenIssuer:
        options = {"kid": "modelgate", "issuer": ISSUER, "audience": AUDIENCE, **changes}
        return TokenIssuer(key, **options)

    globex = SIGNER.issue("svc-globex", "ten_globex", scopes)
    head, payload, signature = globex.split(".")
    flipped = bytearray(_unb64(signature))
    flipped[len(flipped) // 2] ^= 0x01
    edited = json.loads(_unb64(payload)) | {"tenant": "ten_acme"}  # old signature kept
    public_pem = SIGNER.public_key_pem.encode()
    return {
        "valid-jwt": SIGNER.issue("svc-acme", "ten_acme", scopes),
        "other-tenant-jwt": globex,
        "disabled-tenant-jwt": SIGNER.issue("svc-dormant", "ten_dormant", scopes),
        "jwt-flipped-signature": f"{head}.{payload}.{_b64(bytes(flipped))}",
        "jwt-edited-tenant-claim": f"{head}.{_b64(json.dumps(edited).encode())}.{signature}",
        "jwt-alg-none": _forged("none", "ten_acme", lambda _: b""),
        "jwt-hs256-signed-with-public-key": _forged(
            "HS256", "ten_acme", lambda data: hmac.new(public_pem, data, hashlib.sha256).digest()
        ),
        # issued two hours ago for 15 minutes: far past the 60 s leeway
        "jwt-expired": issuer(clock=lambda: time.time() - 7200).issue("s", "ten_acme", scopes),
        "jwt-unknown-kid": issuer(kid="rotated-away").issue("s", "ten_acme", scopes),
        "jwt-foreign-signing-key": issuer(generate_signing_key("RS256")).issue(
            "s", "ten_acme", scopes
        ),
        "jwt-wrong-audience": issuer(audience="another-service").issue("s", "ten_acme", scopes),
        "jwt-unknown-tenant": SIGNER.issue("s", "ten_nobody", scopes),
        "jwt-operators-tenant": _forged("RS256", "*", _rs256),
    }


async def _store_key(
    store: Any, world: World, name: str, tenant: str, scopes: tuple[str, ...], **extra: Any
) -> None:
    issued = issue_key()
    record = ApiKeyRecord(
        id=f"key_{name}",
        tenant_id=tenant,
        name=name,
        prefix=issued.prefix,
        key_hash=issued.key_hash,
        scopes=scopes,
        created_at=datetime.now(UTC),
        **extra,
    )
    await store.create_key(record)
    world.secrets[name] = issued.secret


async def populate(world: World) -> None:
    """The tenants, keys and usage of the world, through the store; a key per tenant
    through the admin API."""
    components = world.server.components
    assert components is not None and components.state is not None
    store = components.state.identity
    now = datetime.now(UTC)
    await store.create_plan(Plan(name="std"))
    for name, disabled in (("acme", False), ("globex", False), ("dormant", True), ("fuzz", False)):
        await store.create_tenant(Tenant(f"ten_{name}", name, "std", now, disabled=disabled))
    some = ("infer", "models:read", "keys:admin")
    await _store_key(store, world, "acme_ops", "ten_acme", ACME_SCOPES)
    await _store_key(store, world, "acme_keyadmin", "ten_acme", ("infer", "keys:admin"))
    await _store_key(store, world, "acme_expired", "ten_acme", some, expires_at=now)
    await _store_key(store, world, "acme_revoked", "ten_acme", some, revoked_at=now)
    await _store_key(store, world, "acme_prober", "ten_acme", ("infer",))
    await _store_key(store, world, "globex_ops", "ten_globex", ACME_SCOPES)
    await _store_key(store, world, "dormant_ops", "ten_dormant", some)
    await components.state.usage.append(
        [
            UsageRecord(now, "ten_acme", "key_acme_ops", "doubler", "1", "cpu", "ok", False, 2),
            UsageRecord(
                now, "ten_globex", "key_globex_ops", "globex-only", "1", "cpu", "ok", False, 7
            ),
        ]
    )
    # A key each through the admin API, so that the audit trail holds both tenants' records.
    for tenant in ("ten_acme", "ten_globex"):
        made = await world.http.post(
            f"/admin/tenants/{tenant}/keys",
            json={"name": "api-made", "scopes": ["infer"]},
            headers=world.auth("admin"),
        )
        assert made.status_code == 201, made.text
        if tenant == "ten_globex":
            world.foreign |= {made.json()["id"], made.json()["prefix"]}


# -- answers and senders -----------------------------------------------------------------------


@dataclass
class Answer:
    """One answer, whatever the protocol: an HTTP status (gRPC codes mapped onto them) and
    the body (gRPC: the status details, or the message as text)."""

    status: int
    text: str
    headers: httpx.Headers | None = None

    def json(self) -> Any:
        return json.loads(self.text)


_GRPC_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
}


async def call_rest(
    world: World,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
    params: dict[str, str] | None = None,
) -> Answer:
    response = await world.http.request(method, path, headers=headers, json=body, params=params)
    return Answer(response.status_code, response.text, response.headers)


async def call_grpc(
    world: World, method: str, request: Any, metadata: tuple[tuple[str, str], ...]
) -> Answer:
    try:
        response = await getattr(world.stub, method)(request, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return Answer(_GRPC_STATUS[exc.code()], exc.details() or "")
    return Answer(200, str(response))


def infer_request(model: str, version: str = "", **tensor: str) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    x = request.inputs.add(**{"name": "x", "datatype": "FP32", **tensor}, shape=[1, 4])
    x.contents.fp32_contents.extend([1, 2, 3, 4])
    return request


# -- helpers of more than one module -----------------------------------------------------------


def credential_for(world: World, name: str) -> list[tuple[str, str]]:
    """The (header, value) pairs a credential case sends (gRPC: as metadata)."""
    s = world.secrets
    acme = s["acme_ops"]
    bearer = {
        "valid-key": acme,
        "malformed-key": "mg_live_short",
        "unknown-key": issue_key().secret,
        "wrong-secret-known-prefix": acme[:-1] + ("y" if acme.endswith("x") else "x"),
        "expired-key": s["acme_expired"],
        "revoked-key": s["acme_revoked"],
        "admin-key-truncated": ADMIN[:-1],
        "other-tenant-key": s["globex_ops"],
        "disabled-tenant-key": s["dormant_ops"],
    }
    basic = base64.b64encode(f"key_acme_ops:{acme}".encode()).decode()
    if name == "none":
        return []
    if name == "empty-bearer":
        return [("authorization", "Bearer")]
    if name == "basic-scheme":
        return [("authorization", f"Basic {basic}")]
    if name == "valid-key-x-api-key":
        return [("x-api-key", acme)]
    if name == "unknown-key-x-api-key":
        return [("x-api-key", issue_key().secret)]
    if name == "unknown-bearer-beside-valid-x-api-key":
        return [("authorization", f"Bearer {issue_key().secret}"), ("x-api-key", acme)]
    return [("authorization", f"Bearer {bearer.get(name) or s[name]}")]


def fill(template: Any, value: str) -> Any:
    """``template`` (a path, a body) with ``value`` where it says :data:`V`."""
    if isinstance(template, str):
        return value if template == V else template.replace(V, value)
    if isinstance(template, dict):
        return {k: fill(v, value) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, value) for v in template]
    return template


def assert_nothing_of_globex(world: World, text: str) -> None:
    assert "globex" not in text.lower(), text
    for ident in world.foreign:
        assert ident not in text, text


async def records(world: World) -> dict[str, list[str]]:
    """What the operator sees of tenants, plans, prices and the keys of the fixed tenants,
    without what moves on its own (``last_used_at``)."""
    admin = world.auth("admin")
    tenants = (await call_rest(world, "GET", "/admin/tenants", admin)).json()
    plans = (await call_rest(world, "GET", "/admin/plans", admin)).json()
    prices = (await call_rest(world, "GET", "/admin/prices", admin)).json()
    keys = []
    for tenant in ("ten_acme", "ten_globex", "ten_dormant", "ten_fuzz"):
        keys += (await call_rest(world, "GET", f"/admin/tenants/{tenant}/keys", admin)).json()
    return {
        "tenants": sorted(row_of(t) for t in tenants),
        "plans": sorted(row_of(p) for p in plans),
        "prices": sorted(row_of(p) for p in prices),
        "keys": sorted(row_of(k) for k in keys),
    }


def row_of(record: dict[str, Any]) -> str:
    """A record as :func:`records` shows it."""
    shown = {k: v for k, v in record.items() if k not in ("last_used_at", "secret")}
    return json.dumps(shown, sort_keys=True)
