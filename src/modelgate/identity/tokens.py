"""The :class:`~modelgate.core.access.ports.TokenVerifier` for JWT bearer tokens.

Who may be an operator: a token signed by modelgate's own issuer (``POST /oauth/token``)
carries the scopes of the API key it was traded for, a subset checked at issue, so it keeps
them. A token from an external identity provider is an operator only when the operator
said so: its ``operator_claim`` (``MODELGATE_JWT_OPERATOR_CLAIM``, e.g.
``groups=modelgate-operators``) must hold the configured value. Without it, whatever its
``scope`` claim says, the token keeps the tenant scopes only (:data:`TENANT_SCOPES` and
``infer:<model>``): an IdP whose clients may ask for any scope string cannot mint operators.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelgate.core.access.identity import Scope
from modelgate.core.access.ports import TokenIdentity
from modelgate.identity.jwt import JwtVerifier, looks_like_jwt
from modelgate.identity.jwt_claims import claims_to_identity

__all__ = ["TENANT_SCOPES", "JwtTokenVerifier", "parse_operator_claim"]

#: the scopes a token from an identity provider keeps without the operator claim
TENANT_SCOPES = frozenset(
    {
        Scope.INFER.value,
        Scope.MODELS_READ.value,
        Scope.MODELS_WRITE.value,
        Scope.KEYS_ADMIN.value,
        Scope.USAGE_READ.value,
        Scope.AUDIT_READ.value,
    }
)


def parse_operator_claim(setting: str) -> tuple[str, str]:
    """``"claim=value"`` as ``(claim, value)``; ``ValueError`` for another shape."""
    claim, sep, value = setting.partition("=")
    claim, value = claim.strip(), value.strip()
    if not sep or not claim or not value:
        raise ValueError(
            f"the operator claim must read 'claim=value' (e.g. groups=modelgate-operators), "
            f"not {setting!r}"
        )
    return claim, value


class JwtTokenVerifier:
    """``own_kid``: the key id of modelgate's own issuer (its tokens keep their scopes);
    ``operator_claim``: ``(claim, value)`` that marks an external token as an operator's."""

    def __init__(
        self,
        verifier: JwtVerifier,
        *,
        tenant_claim: str = "tenant",
        own_kid: str | None = None,
        operator_claim: tuple[str, str] | None = None,
    ):
        self._verifier = verifier
        self._tenant_claim = tenant_claim
        self._own_kid = own_kid
        self._operator_claim = operator_claim

    def claims(self, credential: str) -> bool:
        return looks_like_jwt(credential)

    async def verify(self, token: str) -> TokenIdentity:
        claims, kid = await self._verifier.verify_with_kid(token)
        tenant, scopes, subject = claims_to_identity(claims, tenant_claim=self._tenant_claim)
        if not self._trusted(kid, claims):
            scopes = frozenset(s for s in scopes if s in TENANT_SCOPES or s.startswith("infer:"))
        return TokenIdentity(tenant_id=tenant, subject=subject, scopes=scopes)

    def _trusted(self, kid: str, claims: Mapping[str, Any]) -> bool:
        """May this token, checked by the key ``kid``, carry operator scopes?"""
        if self._own_kid is not None and kid == self._own_kid:
            return True
        if self._operator_claim is None:
            return False
        name, wanted = self._operator_claim
        held = claims.get(name)
        if isinstance(held, str):
            return held == wanted
        return isinstance(held, list) and wanted in held
