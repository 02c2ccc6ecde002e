"""What the claims of a verified JWT must hold, and what they mean to modelgate.

``exp``, ``nbf`` and ``iat`` are whole numbers of seconds, checked against the verifier's
clock with its leeway; a token lives at most the verifier's maximum lifetime. The tenant,
scopes and subject come from named claims (:func:`claims_to_identity`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["check_token_times", "claims_to_identity"]


def _unauthenticated(message: str) -> ModelgateError:
    return ModelgateError(ErrorKind.UNAUTHENTICATED, message)


def check_token_times(
    claims: Mapping[str, Any], *, now: float, leeway_s: float, max_lifetime_s: int
) -> None:
    """UNAUTHENTICATED unless ``exp`` (required), ``nbf`` and ``iat`` fit ``now`` within
    ``leeway_s`` of clock skew, and the token lives at most ``max_lifetime_s``: ``exp`` no
    further than that from now, nor from ``iat``."""
    exp = _numeric_date(claims, "exp")
    if exp is None or exp <= now - leeway_s:
        raise _unauthenticated("the token has expired")
    longest = max_lifetime_s + leeway_s
    if exp - now > longest:
        raise _unauthenticated(
            f"the token's 'exp' is more than {max_lifetime_s} s away (its lifetime is too long)"
        )
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and nbf > now + leeway_s:
        raise _unauthenticated("the token is not valid yet (nbf)")
    iat = _numeric_date(claims, "iat")
    if iat is not None and iat > now + leeway_s:
        raise _unauthenticated("the token was issued in the future (iat)")
    if iat is not None and exp - iat > longest:
        raise _unauthenticated(f"the token lives more than {max_lifetime_s} s from 'iat' to 'exp'")


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | None:
    """A time claim: whole seconds only. RFC 7519 allows fractions, but no issuer we know of
    sends them, and refusing floats keeps ``1e308`` and ``NaN`` out of every comparison."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _unauthenticated(f"the token's {name!r} claim is not a number of whole seconds")
    return value


def claims_to_identity(
    claims: Mapping[str, Any], *, tenant_claim: str = "tenant", scope_claim: str = "scope"
) -> tuple[str, frozenset[str], str]:
    """``(tenant id, scopes, subject)`` from verified claims.

    Scopes come from ``scope_claim`` (space separated, as OAuth2 sends them) or, where it is
    absent, from ``scp`` (a list or a space-separated string, as some identity providers send
    them); neither means no scopes. UNAUTHENTICATED when the tenant claim is missing or empty
    or names the operators' tenant ``*`` (which no token may claim), or when the scopes or
    the subject are malformed.
    """
    tenant = claims.get(tenant_claim)
    if not isinstance(tenant, str) or not tenant:
        raise _unauthenticated(f"the token has no {tenant_claim!r} claim")
    if tenant == ADMIN_TENANT:
        raise _unauthenticated("a token cannot claim the operators' tenant")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise _unauthenticated("the token has no subject (sub)")
    raw = claims.get(scope_claim, claims.get("scp"))
    return tenant, _scopes(raw), subject


def _scopes(raw: object) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list) and all(
        isinstance(s, str) and s and not any(c.isspace() for c in s) for s in raw
    ):
        return frozenset(raw)
    raise _unauthenticated("the token's scopes are malformed")
