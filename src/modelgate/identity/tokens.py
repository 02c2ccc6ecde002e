"""The :class:`~modelgate.core.authentication.TokenVerifier` for JWT bearer tokens."""

from __future__ import annotations

from modelgate.core.authentication import TokenIdentity
from modelgate.identity.jwt import JwtVerifier, claims_to_identity, looks_like_jwt

__all__ = ["JwtTokenVerifier"]


class JwtTokenVerifier:
    def __init__(self, verifier: JwtVerifier, *, tenant_claim: str = "tenant"):
        self._verifier = verifier
        self._tenant_claim = tenant_claim

    def claims(self, credential: str) -> bool:
        return looks_like_jwt(credential)

    async def verify(self, token: str) -> TokenIdentity:
        claims = await self._verifier.verify(token)
        tenant, scopes, subject = claims_to_identity(claims, tenant_claim=self._tenant_claim)
        return TokenIdentity(tenant_id=tenant, subject=subject, scopes=scopes)
