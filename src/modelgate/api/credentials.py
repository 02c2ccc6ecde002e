"""Where a credential travels: ``Authorization: Bearer <key>`` (what the OpenAI SDK sends)
or ``x-api-key: <key>``, as an HTTP header or gRPC metadata alike."""

from __future__ import annotations

__all__ = ["PRINCIPAL", "credential_from"]

#: the ASGI scope key of the principal a request was authenticated as, set by ``RestApp``
#: (the mounted admin app reads it instead of authenticating the same headers again)
PRINCIPAL = "modelgate.principal"


def credential_from(authorization: str | None, api_key: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return authorization.strip()  # not a bearer token: authentication will refuse it
    return api_key.strip() if api_key else None
