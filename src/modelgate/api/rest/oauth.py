"""``POST /oauth/token``: OAuth2 client credentials (RFC 6749 4.4), in RFC 6749's error
shape (``error`` and ``error_description``) rather than the OIP one."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qs, unquote_plus

import orjson

from modelgate.api.rest.asgi import (
    Receive,
    Scope,
    Send,
    client_host,
    closing_headers,
    read_body,
    respond,
)
from modelgate.api.rest.errors import http_status, retry_after_header
from modelgate.core.access.oauth import OAuthError, TokenService
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.errors import ModelgateError

__all__ = ["issue_token"]

_JSON = [(b"content-type", b"application/json")]
#: the largest ``/oauth/token`` body: a form of a few fields
_OAUTH_MAX_BODY = 16 * 1024


async def issue_token(
    tokens: TokenService,
    abuse: AbuseGuard | None,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    headers = [*_JSON, (b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
    try:
        if abuse is not None:  # a blocked address is refused before any look-up
            await abuse.check_address(client_host(scope))
        if scope["method"] != "POST":  # 405 with Allow, as for any other route
            raise OAuthError("invalid_request", "the token endpoint takes POST only", 405)
        body = await read_body(scope, receive, _OAUTH_MAX_BODY)
        form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        if any(len(values) > 1 for values in form.values()):
            raise OAuthError("invalid_request", "a parameter is given twice")
        fields = {key: values[0] for key, values in form.items()}
        if fields.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "only client_credentials is offered")
        client_id, secret = fields.get("client_id"), fields.get("client_secret")
        basic = _basic_credentials(scope)
        if basic is not None:
            # RFC 6749 2.3: a client must not use more than one authentication method
            if secret is not None or client_id not in (None, basic[0]):
                raise OAuthError(
                    "invalid_request", "send the client credentials once: Basic or the form"
                )
            client_id, secret = basic
        issued = await tokens.client_credentials(client_id, secret, fields.get("scope"))
    except OAuthError as exc:
        if exc.status == 401 and abuse is not None:  # a refused client: guessing?
            await abuse.refused_credential(client_host(scope))
        extra = [(b"www-authenticate", b'Basic realm="modelgate"')] if exc.status == 401 else []
        if exc.status == 405:
            extra.append((b"allow", b"POST"))
        body = orjson.dumps({"error": exc.error, "error_description": exc.description})
        await respond(send, exc.status, body, headers + extra)
        return
    except ModelgateError as exc:  # e.g. a body over the limit
        body = orjson.dumps({"error": "invalid_request", "error_description": exc.message})
        extra = [*retry_after_header(exc), *closing_headers(scope, exc)]
        await respond(send, http_status(exc), body, headers + extra)
        return
    answer = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    await respond(send, 200, orjson.dumps(answer), headers)


def _basic_credentials(scope: Scope) -> tuple[str, str] | None:
    """``Authorization: Basic`` client credentials, as RFC 6749 prefers them."""
    for key, value in scope["headers"]:
        if key == b"authorization" and value[:6].lower() == b"basic ":
            try:
                decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
            client_id, sep, secret = decoded.partition(":")
            if not sep:
                raise OAuthError("invalid_client", "malformed Basic credentials", 401)
            return unquote_plus(client_id), unquote_plus(secret)
    return None
