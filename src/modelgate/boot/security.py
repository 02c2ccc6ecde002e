"""Bearer tokens from settings: modelgate's own token issuer (client credentials) and the
verifier of JWT bearer tokens, for the authenticator :mod:`modelgate.boot.components`
builds. ``modelgate.identity`` (PyJWT, cryptography) is imported only when configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelgate.core.access.ports import TokenVerifier
from modelgate.settings import Settings

if TYPE_CHECKING:
    from modelgate.identity.jwt import TokenIssuer

__all__ = ["build_token_issuer", "build_token_verifier"]


def build_token_issuer(settings: Settings) -> TokenIssuer | None:
    """modelgate's own token issuer (client credentials), when it has a signing key."""
    if settings.jwt_signing_key is None:
        return None
    if settings.jwt_issuer is None:
        raise ValueError("MODELGATE_JWT_SIGNING_KEY needs MODELGATE_JWT_ISSUER")
    from modelgate.identity.jwt import TokenIssuer

    return TokenIssuer(
        settings.jwt_signing_key.get_secret_value(),
        kid=settings.jwt_signing_kid,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_s=settings.jwt_token_ttl_seconds,
    )


def build_token_verifier(settings: Settings, issuer: TokenIssuer | None) -> TokenVerifier | None:
    """JWT bearer tokens, when an issuer is configured (its own tokens included)."""
    if settings.jwt_issuer is None:
        return None
    from modelgate.identity.jwt import JwtVerifier
    from modelgate.identity.tokens import JwtTokenVerifier, parse_operator_claim

    lifetime = settings.jwt_max_token_lifetime_seconds
    keys = dict(settings.jwt_public_keys)
    if issuer is not None:
        if issuer.ttl_s > lifetime:
            raise ValueError(
                "MODELGATE_JWT_TOKEN_TTL_SECONDS exceeds MODELGATE_JWT_MAX_TOKEN_LIFETIME_SECONDS"
            )
        keys[issuer.kid] = issuer.public_key_pem
    verifier = JwtVerifier(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        public_keys=keys or None,
        jwks_url=settings.jwt_jwks_url,
        max_lifetime_s=lifetime,
    )
    operator = settings.jwt_operator_claim
    return JwtTokenVerifier(
        verifier,
        tenant_claim=settings.jwt_tenant_claim,
        own_kid=issuer.kid if issuer is not None else None,
        operator_claim=parse_operator_claim(operator) if operator else None,
    )
