"""Time claims are whole seconds within a bounded lifetime, and a token from an identity
provider is never an operator unless the configured operator claim says so."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.access.identity import Scope
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.identity.jwt import JwtVerifier, TokenIssuer, generate_signing_key
from modelgate.identity.tokens import JwtTokenVerifier, parse_operator_claim
from tests.unit.adapters.test_jwt import AUD, ISS, NOW, STATIC_KEYS, signed, static_verifier

DAY = 86_400


async def refused(token: str, verifier: JwtVerifier | None = None) -> str:
    with pytest.raises(ModelgateError) as caught:
        await (verifier or static_verifier(clock=lambda: NOW)).verify(token)
    assert caught.value.kind is ErrorKind.UNAUTHENTICATED
    return caught.value.message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exp": 1e308}, "'exp' claim is not a number of whole seconds"),
        ({"exp": float(int(NOW) + 300)}, "'exp' claim is not a number of whole seconds"),
        ({"exp": 10**30}, "more than 86400 s away"),
        ({"exp": int(NOW) + DAY + 61}, "more than 86400 s away"),
        ({"nbf": 1.5}, "'nbf' claim is not a number of whole seconds"),
        ({"iat": -1e308}, "'iat' claim is not a number of whole seconds"),
        ({"iat": int(NOW) - 10 * DAY, "exp": int(NOW) + 60}, "from 'iat' to 'exp'"),
    ],
)
async def test_absurd_time_claims_are_refused(changes: dict[str, Any], message: str) -> None:
    assert message in await refused(signed(**changes))


async def test_a_token_within_the_lifetime_is_accepted() -> None:
    verifier = static_verifier(clock=lambda: NOW)
    claims = await verifier.verify(signed(iat=int(NOW), exp=int(NOW) + DAY))
    assert claims["sub"] == "client-1"


async def test_the_lifetime_is_configurable() -> None:
    short = static_verifier(clock=lambda: NOW, max_lifetime_s=600)
    assert "more than 600 s away" in await refused(signed(exp=int(NOW) + 3600), short)
    assert (await short.verify(signed(exp=int(NOW) + 300)))["sub"] == "client-1"


def test_a_lifetime_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_lifetime_s"):
        JwtVerifier(issuer=ISS, audience=AUD, public_keys=STATIC_KEYS, max_lifetime_s=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["exp", "nbf", "iat"]),
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**40), max_value=10**40),
)
def test_any_time_value_is_accepted_or_refused_never_an_error(name: str, value: object) -> None:
    try:
        asyncio.run(static_verifier(clock=lambda: NOW).verify(signed(**{name: value})))
        outcome = None
    except ModelgateError as error:
        outcome = error.kind
    if outcome is not None:
        assert outcome is ErrorKind.UNAUTHENTICATED
        return
    assert isinstance(value, int)  # only sane whole seconds get through
    if name == "exp":
        assert NOW - 60 < value <= NOW + DAY + 60


# --- who may be an operator -------------------------------------------------------------

IDP_PEM = generate_signing_key("ES256")
IDP = TokenIssuer(IDP_PEM, kid="idp1", issuer=ISS, audience=AUD)
OWN = TokenIssuer(generate_signing_key("ES256"), kid="modelgate", issuer=ISS, audience=AUD)
ADMIN = Scope.TENANTS_ADMIN.value


def verifier(**options: Any) -> JwtTokenVerifier:
    keys = {"idp1": IDP.public_key_pem, "modelgate": OWN.public_key_pem}
    return JwtTokenVerifier(
        JwtVerifier(issuer=ISS, audience=AUD, public_keys=keys), own_kid="modelgate", **options
    )


def idp_token(**extra: Any) -> str:
    """A token as an identity provider signs it, with its own claims."""
    now = int(time.time())
    body = {"iss": ISS, "aud": AUD, "sub": "svc", "tenant": "ten_a", "iat": now, "exp": now + 300}
    key = serialization.load_pem_private_key(IDP_PEM.encode(), None)
    return jwt.encode({**body, **extra}, key, algorithm="ES256", headers={"kid": "idp1"})


async def test_an_idp_token_asking_for_tenants_admin_is_not_an_operator() -> None:
    identity = await verifier().verify(idp_token(scope=f"{ADMIN} infer models:write"))
    assert identity.scopes == {"infer", "models:write"}


async def test_every_scope_that_is_not_a_tenant_scope_is_dropped() -> None:
    token = idp_token(scope=f"{ADMIN} models:configure infer:credit-risk@2 usage:read x")
    identity = await verifier().verify(token)
    assert identity.scopes == {"infer:credit-risk@2", "usage:read"}


@pytest.mark.parametrize("groups", [["staff", "mg-ops"], "mg-ops"])
async def test_the_operator_claim_keeps_the_scopes(groups: object) -> None:
    ops = verifier(operator_claim=("groups", "mg-ops"))
    identity = await ops.verify(idp_token(scope=f"{ADMIN} infer", groups=groups))
    assert identity.scopes == {ADMIN, "infer"}


@pytest.mark.parametrize("groups", [None, ["staff"], "mg-ops-not", ["mg-ops-x"], {"mg-ops": 1}])
async def test_without_the_operator_value_the_token_is_a_tenant(groups: object) -> None:
    ops = verifier(operator_claim=("groups", "mg-ops"))
    extra = {} if groups is None else {"groups": groups}
    identity = await ops.verify(idp_token(scope=f"{ADMIN} infer", **extra))
    assert identity.scopes == {"infer"}


async def test_modelgate_s_own_tokens_keep_the_scopes_of_their_key() -> None:
    token = OWN.issue("key_1", "ten_ops", [ADMIN, "infer"])
    assert (await verifier().verify(token)).scopes == {ADMIN, "infer"}


async def test_an_idp_key_cannot_pass_for_modelgate_s_own() -> None:
    # the IdP names modelgate's kid but signs with its own key: the signature fails
    token = IDP.issue("svc", "ten_a", [ADMIN])
    forged = token.replace(token.split(".")[0], OWN.issue("x", "t", ["infer"]).split(".")[0])
    with pytest.raises(ModelgateError):
        await verifier().verify(forged)


@pytest.mark.parametrize("setting", ["groups", "=x", "groups=", " = "])
def test_a_malformed_operator_claim_setting_is_refused(setting: str) -> None:
    with pytest.raises(ValueError, match="claim=value"):
        parse_operator_claim(setting)


def test_the_operator_claim_setting_is_parsed() -> None:
    assert parse_operator_claim("groups=modelgate-operators") == (
        "groups",
        "modelgate-operators",
    )
