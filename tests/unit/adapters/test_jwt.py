"""JWT bearer tokens: what is accepted, everything else is UNAUTHENTICATED, and the JWKS URL
is fetched sparingly (served here by a local HTTP server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.access.keys import issue_key
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.identity.jwt import (
    JwtVerifier,
    TokenIssuer,
    generate_signing_key,
    looks_like_jwt,
)
from modelgate.identity.jwt_claims import claims_to_identity

NOW = 1_800_000_000.0
ISS = "https://idp.example"
AUD = "modelgate"

RSA_PEM = generate_signing_key("RS256")
OTHER_RSA_PEM = generate_signing_key("RS256")
EC_PEM = generate_signing_key("ES256")
RSA = TokenIssuer(RSA_PEM, kid="rsa1", issuer=ISS, audience=AUD, clock=lambda: NOW)
EC = TokenIssuer(EC_PEM, kid="ec1", issuer=ISS, audience=AUD, clock=lambda: NOW)
STATIC_KEYS = {"rsa1": RSA.public_key_pem, "ec1": EC.public_key_pem}

DROP = object()


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_b64(value: object) -> str:
    return _b64(json.dumps(value).encode())


def claims(**changes: object) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "client-1",
        "tenant": "acme",
        "scope": "infer models:read",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


def signed(
    pem: str = RSA_PEM, alg: str = "RS256", kid: str | None = "rsa1", **changes: object
) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**changes), _private(pem), algorithm=alg, headers=headers)


@functools.cache
def _private(pem: str) -> Any:
    """The loaded key (loading an RSA PEM takes tens of ms); an HMAC secret as it is."""
    if "PRIVATE KEY" not in pem:
        return pem
    return serialization.load_pem_private_key(pem.encode(), None)


def static_verifier(clock: Callable[[], float] | None = None, **options: Any) -> JwtVerifier:
    return JwtVerifier(
        issuer=ISS, audience=AUD, public_keys=STATIC_KEYS, clock=clock or Clock(), **options
    )


# --- tokens crafted by hand -------------------------------------------------------------


def unsigned(alg: str = "none") -> str:
    return f"{_json_b64({'alg': alg, 'kid': 'rsa1', 'typ': 'JWT'})}.{_json_b64(claims())}."


def hs256_with_public_pem() -> str:
    """The HS/RS confusion attack: MAC the token with the RSA *public* key PEM as the secret.

    A verifier that let the token's ``alg`` pick the algorithm would check this MAC with the
    same public PEM it holds for RS256 and accept it."""
    signing_input = f"{_json_b64({'alg': 'HS256', 'kid': 'rsa1'})}.{_json_b64(claims())}"
    mac = hmac.new(RSA.public_key_pem.encode(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{_b64(mac.digest())}"


def tampered_payload() -> str:
    header, _, signature = signed().split(".")
    return f"{header}.{_json_b64(claims(tenant='victim'))}.{signature}"


def tampered_signature() -> str:
    header, payload, signature = signed().split(".")
    flipped = ("A" if signature[10] != "A" else "B").join((signature[:10], signature[11:]))
    return f"{header}.{payload}.{flipped}"


REJECTED: list[tuple[str, Callable[[], str], str]] = [
    ("alg none", unsigned, "algorithm is not accepted"),
    ("alg None", lambda: unsigned("None"), "algorithm is not accepted"),
    ("alg HS256 with the RSA public key", hs256_with_public_pem, "algorithm is not accepted"),
    ("alg HS256 signed", lambda: signed("x" * 32, "HS256"), "algorithm is not accepted"),
    ("alg RS512 not configured", lambda: signed(alg="RS512"), "algorithm is not accepted"),
    ("RS256 by another key", lambda: signed(OTHER_RSA_PEM), "signature is not valid"),
    ("RS256 naming the EC key", lambda: signed(kid="ec1"), "does not fit"),
    ("ES256 naming the RSA key", lambda: signed(EC_PEM, "ES256", "rsa1"), "does not fit"),
    ("unknown kid", lambda: signed(kid="nope"), "kid) is not known"),
    ("no kid", lambda: signed(kid=None), "names no signing key"),
    ("expired beyond leeway", lambda: signed(exp=int(NOW) - 61), "expired"),
    ("nbf beyond leeway", lambda: signed(nbf=int(NOW) + 61), "not valid yet"),
    ("iat beyond leeway", lambda: signed(iat=int(NOW) + 61), "issued in the future"),
    ("wrong iss", lambda: signed(iss="https://evil.example"), "issuer"),
    ("wrong aud", lambda: signed(aud="someone-else"), "audience"),
    ("aud list without ours", lambda: signed(aud=["a", "b"]), "audience"),
    ("no aud", lambda: signed(aud=DROP), "'aud'"),
    ("no exp", lambda: signed(exp=DROP), "'exp'"),
    ("no sub", lambda: signed(sub=DROP), "'sub'"),
    ("no iss", lambda: signed(iss=DROP), "'iss'"),
    ("empty sub", lambda: signed(sub=""), "subject"),
    ("exp not a number", lambda: signed(exp="tomorrow"), "not a number"),
    ("exp a boolean", lambda: signed(exp=True), "not a number"),
    ("tampered payload", tampered_payload, "signature is not valid"),
    ("tampered signature", tampered_signature, "signature is not valid"),
    (
        "crit header",
        lambda: jwt.encode(claims(), _private(RSA_PEM), "RS256", {"kid": "rsa1", "crit": ["x"]}),
        "critical",
    ),
    ("header not an object", lambda: f"{_json_b64([1])}.{_json_b64(claims())}.c2ln", "well-formed"),
    ("header not JSON", lambda: f"{_b64(b'{nope')}.{_json_b64(claims())}.c2ln", "well-formed"),
    ("payload not JSON", lambda: f"{signed().split('.')[0]}.{_b64(b'[[')}.c2ln", "not valid"),
    ("empty", lambda: "", "well-formed"),
    ("two segments", lambda: "eyJhbGciOiJSUzI1NiJ9.eyJ9", "well-formed"),
    ("four segments", lambda: signed() + ".x", "well-formed"),
    ("not base64url", lambda: "eyJ!.eyJ?.sig*", "well-formed"),
    ("bad base64 length", lambda: "eyJhb.eyJ9.c2ln", "well-formed"),
    ("an API key", lambda: issue_key().secret, "well-formed"),
    ("huge", lambda: "eyJ" + "a" * 9000 + ".eyJ9.c2ln", "well-formed"),
]


@pytest.mark.parametrize(
    ("make", "reason"), [(m, r) for _, m, r in REJECTED], ids=[i for i, _, _ in REJECTED]
)
async def test_rejected(make: Callable[[], str], reason: str) -> None:
    token = make()
    with pytest.raises(ModelgateError) as caught:
        await static_verifier().verify(token)
    assert caught.value.kind is ErrorKind.UNAUTHENTICATED
    assert reason in caught.value.message
    if token:
        assert token not in caught.value.message


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(signed(), id="RS256"),
        pytest.param(signed(EC_PEM, "ES256", "ec1"), id="ES256"),
        pytest.param(signed(aud=["other", AUD]), id="aud list with ours"),
        pytest.param(signed(exp=int(NOW) - 59), id="expired within leeway"),
        pytest.param(signed(nbf=int(NOW) + 59, iat=int(NOW) + 59), id="nbf within leeway"),
        pytest.param(RSA.issue("client-1", "acme", ["infer"]), id="issued RS256"),
        pytest.param(EC.issue("client-1", "acme", ["infer"]), id="issued ES256"),
    ],
)
async def test_accepted_from_static_keys(token: str) -> None:
    verified = await static_verifier().verify(token)
    assert verified["sub"] == "client-1" and verified["tenant"] == "acme"


async def test_leeway_is_configurable_down_to_zero() -> None:
    with pytest.raises(ModelgateError, match="expired"):
        await static_verifier(leeway_s=0).verify(signed(exp=int(NOW) - 1))


def test_configuration_is_checked() -> None:
    bad_options: tuple[dict[str, Any], ...] = (
        {"leeway_s": 61},
        {"algorithms": ("RS256", "HS256")},
        {"algorithms": ("none",)},
        {"algorithms": ()},
        {"public_keys": {}},
        {"public_keys": {"k": "not a pem"}},
        {"public_keys": {"k": RSA_PEM}},  # a private key is no public key
        {"public_keys": None, "jwks_url": "file:///etc/jwks.json"},
    )
    for bad in bad_options:
        kwargs: dict[str, Any] = {"issuer": ISS, "audience": AUD, "public_keys": STATIC_KEYS}
        kwargs.update(bad)
        with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
            JwtVerifier(**kwargs)


def test_looks_like_jwt() -> None:
    assert looks_like_jwt(signed())
    assert looks_like_jwt(unsigned())  # reaches the verifier, which names the reason
    for not_jwt in (
        issue_key().secret,
        "mg_live_abc.def.ghi",
        "",
        "a.b",
        "a..c",
        ".b.c",
        "a.b.c.d",
        "a b.c.d",
        "eyJ!.eyJ.sig",
    ):
        assert not looks_like_jwt(not_jwt), not_jwt


# --- claims to identity -------------------------------------------------------------------


def test_claims_to_identity() -> None:
    assert claims_to_identity(claims()) == ("acme", frozenset({"infer", "models:read"}), "client-1")
    scp = claims(scope=DROP, scp=["infer", "usage:read"])
    assert claims_to_identity(scp)[1] == frozenset({"infer", "usage:read"})
    assert claims_to_identity(claims(scope=DROP))[1] == frozenset()
    custom = claims(org="acme2", perms="infer")
    assert claims_to_identity(custom, tenant_claim="org", scope_claim="perms")[:2] == (
        "acme2",
        frozenset({"infer"}),
    )


@pytest.mark.parametrize(
    "bad",
    [
        claims(tenant=DROP),
        claims(tenant=""),
        claims(tenant=7),
        claims(tenant="*"),  # the operators' tenant: every tenant's data
        claims(scope=["infer", "two words"]),
        claims(scope=7),
        claims(sub=DROP),
    ],
)
def test_claims_to_identity_refuses(bad: dict[str, Any]) -> None:
    with pytest.raises(ModelgateError) as caught:
        claims_to_identity(bad)
    assert caught.value.kind is ErrorKind.UNAUTHENTICATED


# --- the issuer ---------------------------------------------------------------------------


async def test_issuer_round_trip_through_static_key() -> None:
    clock = Clock()
    issuer = TokenIssuer(generate_signing_key(), kid="k", issuer=ISS, audience=AUD, clock=clock)
    verifier = JwtVerifier(
        issuer=ISS, audience=AUD, public_keys={"k": issuer.public_key_pem}, clock=clock
    )
    token = issuer.issue("client-9", "acme", ["models:read", "infer"])
    assert claims_to_identity(await verifier.verify(token)) == (
        "acme",
        frozenset({"infer", "models:read"}),
        "client-9",
    )
    clock.t += issuer.ttl_s + 61
    with pytest.raises(ModelgateError, match="expired"):
        await verifier.verify(token)


def test_issuer_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="fits ES256"):
        TokenIssuer(EC_PEM, kid="k", issuer=ISS, audience=AUD, algorithm="RS256")
    with pytest.raises(ValueError, match="PEM private key"):
        TokenIssuer(RSA.public_key_pem, kid="k", issuer=ISS, audience=AUD)
    with pytest.raises(ValueError, match="tenant"):
        RSA.issue("client", "*", ["infer"])
    with pytest.raises(ValueError, match="whitespace"):
        RSA.issue("client", "acme", ["infer models:read"])


# --- the JWKS URL -------------------------------------------------------------------------


class JwksServer:
    """A minimal HTTP/1.1 server for one JSON document; ``mode`` ok | error | hang."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": RSA.jwks()["keys"] + EC.jwks()["keys"]}
        self.mode = "ok"
        self.hits = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._hung: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"

    async def stop(self) -> None:
        assert self._server is not None
        for writer in self._hung:
            writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.hits += 1
        if self.mode == "hang":
            self._hung.append(writer)
            return
        status, body = ("200 OK", json.dumps(self.document).encode())
        if self.mode == "error":
            status, body = ("500 Internal Server Error", b"{}")
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    jwks = JwksServer()
    await jwks.start()
    yield jwks
    await jwks.stop()


def jwks_verifier(url: str, clock: Clock, **options: Any) -> JwtVerifier:
    return JwtVerifier(issuer=ISS, audience=AUD, jwks_url=url, clock=clock, **options)


async def test_jwks_accepts_rs256_and_es256_with_one_fetch(server: JwksServer) -> None:
    verifier = jwks_verifier(server.url, Clock())
    tokens = [signed(), signed(EC_PEM, "ES256", "ec1"), RSA.issue("client-1", "acme", [])]
    for _ in range(10):
        for token in tokens:
            assert (await verifier.verify(token))["sub"] == "client-1"
    assert server.hits == 1


async def test_jwks_concurrent_cold_start_fetches_once(server: JwksServer) -> None:
    verifier = jwks_verifier(server.url, Clock())
    await asyncio.gather(*(verifier.verify(signed()) for _ in range(20)))
    assert server.hits == 1


async def test_jwks_cache_expires(server: JwksServer) -> None:
    clock = Clock()
    verifier = jwks_verifier(server.url, clock, jwks_cache_s=300)
    await verifier.verify(signed())
    clock.t += 299
    await verifier.verify(signed())
    assert server.hits == 1
    clock.t += 2
    await verifier.verify(signed())
    assert server.hits == 2


async def test_jwks_unknown_kids_refresh_at_most_every_30_s(server: JwksServer) -> None:
    clock = Clock()
    verifier = jwks_verifier(server.url, clock)
    await verifier.verify(signed())
    for i in range(50):
        with pytest.raises(ModelgateError, match="not known"):
            await verifier.verify(signed(kid=f"made-up-{i}"))
    assert server.hits == 1  # the first fetch was under 30 s ago
    clock.t += 31
    for i in range(50):
        with pytest.raises(ModelgateError, match="not known"):
            await verifier.verify(signed(kid=f"made-up-{i}"))
    assert server.hits == 2


async def test_jwks_rotation_picks_up_a_new_key(server: JwksServer) -> None:
    clock = Clock()
    verifier = jwks_verifier(server.url, clock)
    await verifier.verify(signed())
    rotated = TokenIssuer(OTHER_RSA_PEM, kid="rsa2", issuer=ISS, audience=AUD, clock=clock)
    server.document = {"keys": rotated.jwks()["keys"]}
    clock.t += 31
    assert (await verifier.verify(rotated.issue("client-2", "acme", [])))["sub"] == "client-2"
    with pytest.raises(ModelgateError, match="not known"):  # rsa1 is gone from the set
        await verifier.verify(signed())


async def test_jwks_skips_unusable_keys(server: JwksServer) -> None:
    hmac_key = {"kty": "oct", "kid": "rsa1", "k": _b64(RSA.public_key_pem.encode())}
    mislabelled = {**RSA.jwks()["keys"][0], "kid": "hs", "alg": "HS256"}
    encrypting = {**EC.jwks()["keys"][0], "kid": "enc", "use": "enc"}
    server.document = {"keys": [hmac_key, mislabelled, encrypting, "junk", *EC.jwks()["keys"]]}
    verifier = jwks_verifier(server.url, Clock())
    assert await verifier.verify(signed(EC_PEM, "ES256", "ec1"))
    for token in (signed(), signed(kid="hs"), signed(EC_PEM, "ES256", "enc")):
        with pytest.raises(ModelgateError, match="not known"):
            await verifier.verify(token)


async def test_jwks_failure_keeps_cached_keys(server: JwksServer) -> None:
    clock = Clock()
    verifier = jwks_verifier(server.url, clock)
    await verifier.verify(signed())
    server.mode = "error"
    clock.t += 301
    assert await verifier.verify(signed())
    assert server.hits == 2


async def test_jwks_cached_key_serves_while_a_refresh_waits(server: JwksServer) -> None:
    clock = Clock()
    verifier = jwks_verifier(server.url, clock, http_timeout_s=0.3)
    await verifier.verify(signed())
    server.mode = "hang"
    clock.t += 301
    refreshing = asyncio.create_task(verifier.verify(signed()))
    await asyncio.sleep(0.05)  # the refresh is now waiting on the server
    started = time.monotonic()
    assert await verifier.verify(signed())
    assert time.monotonic() - started < 0.1 and not refreshing.done()
    assert await refreshing  # the fetch timed out; the cached key still verifies
    assert server.hits == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_jwks_server_down_is_unauthenticated_quickly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    verifier = jwks_verifier(f"http://127.0.0.1:{_closed_port()}/jwks", clock)
    token = signed()
    started = time.monotonic()
    with pytest.raises(ModelgateError, match="cannot verify tokens right now") as caught:
        await verifier.verify(token)
    assert caught.value.kind is ErrorKind.UNAUTHENTICATED
    assert time.monotonic() - started < 1.0
    assert "cannot fetch the JWKS" in caplog.text and token not in caplog.text


@pytest.mark.parametrize("mode", ["hang", "error"])
async def test_jwks_unanswered_or_failing_is_unauthenticated_within_timeout(
    server: JwksServer, mode: str
) -> None:
    server.mode = mode
    clock = Clock()
    verifier = jwks_verifier(server.url, clock, http_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(ModelgateError, match="cannot verify tokens right now"):
        await verifier.verify(signed())
    assert time.monotonic() - started < 0.3 + 0.5
    # Within 30 s nobody waits on the JWKS server again: refused at once, no new fetch.
    started = time.monotonic()
    for _ in range(10):
        with pytest.raises(ModelgateError, match="cannot verify tokens right now"):
            await verifier.verify(signed())
    assert time.monotonic() - started < 0.2
    assert server.hits == 1


# --- nothing escapes but UNAUTHENTICATED ---------------------------------------------------

FUZZ_VERIFIER = static_verifier(clock=lambda: NOW)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
_segment = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _outcome(token: str) -> dict[str, Any] | None:
    try:
        return asyncio.run(FUZZ_VERIFIER.verify(token))
    except ModelgateError as error:
        kind = error.kind
    assert kind is ErrorKind.UNAUTHENTICATED
    return None


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_are_unauthenticated(data: bytes) -> None:
    assert _outcome(data.decode("utf-8", "replace")) is None


@_FUZZ
@given(_segment, _segment, _segment)
def test_random_three_part_strings_are_unauthenticated(a: str, b: str, c: str) -> None:
    assert _outcome(f"{a}.{b}.{c}") is None


@_FUZZ
@given(
    st.dictionaries(st.sampled_from(["alg", "kid", "crit", "typ"]), _json)
    | st.fixed_dictionaries({"alg": st.sampled_from(["RS256", "ES256", "none"]), "kid": _json}),
    _json,
    st.binary(max_size=64),
)
def test_random_headers_and_payloads_are_unauthenticated(
    header: object, payload: object, signature: bytes
) -> None:
    assert _outcome(f"{_json_b64(header)}.{_json_b64(payload)}.{_b64(signature)}") is None


@_FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={name: _json | st.just(good) for name, good in claims(nbf=int(NOW)).items()},
    )
)
def test_signed_random_claims_verify_or_are_unauthenticated(payload: dict[str, Any]) -> None:
    # PyJWS signs any bytes; PyJWT's encode would refuse some of these claims itself.
    body = json.dumps(payload).encode()
    verified = _outcome(jwt.PyJWS().encode(body, _private(EC_PEM), "ES256", {"kid": "ec1"}))
    if verified is not None:
        assert verified["iss"] == ISS and verified["sub"] and verified["exp"] > NOW - 60
