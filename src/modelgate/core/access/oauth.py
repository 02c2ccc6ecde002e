"""The OAuth2 client-credentials grant (RFC 6749, section 4.4): a service account trades
its API key for a short-lived bearer token.

The client is an API key: ``client_id`` is the key's id (``key_...``), ``client_secret``
the key itself. The token carries the key's tenant and the scopes asked for, which must be
a subset of the key's own; it is signed by the
:class:`~modelgate.core.access.ports.TokenSigner` and accepted by every replica that trusts
the signer's public key.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.ports import TokenSigner
from modelgate.errors import ModelgateError

__all__ = [
    "IssuedToken",
    "OAuthError",
    "TokenService",
]


class OAuthError(Exception):
    """An error in RFC 6749's shape: ``error`` is one of its codes."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


class TokenService:
    def __init__(self, authenticator: Authenticator, signer: TokenSigner):
        self._authenticator = authenticator
        self._signer = signer

    async def client_credentials(
        self, client_id: str | None, client_secret: str | None, scope: str | None
    ) -> IssuedToken:
        if not client_id or not client_secret:
            raise OAuthError("invalid_client", "client_id and client_secret are required", 401)
        try:
            principal = await self._authenticator.authenticate(client_secret)
        except ModelgateError:
            raise OAuthError(
                "invalid_client", "the client credentials are not valid", 401
            ) from None
        if principal.kind != "key" or principal.subject != client_id:
            raise OAuthError("invalid_client", "the client credentials are not valid", 401)
        asked = frozenset(scope.split()) if scope else principal.scopes
        if not asked <= principal.scopes:
            extra = " ".join(sorted(asked - principal.scopes))
            raise OAuthError("invalid_scope", f"the client may not ask for: {extra}")
        granted = " ".join(sorted(asked))
        token = self._signer.issue(principal.subject, principal.tenant_id, sorted(asked))
        return IssuedToken(token, self._signer.ttl_s, granted)
