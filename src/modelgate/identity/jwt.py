"""JWT bearer tokens: verified by :class:`JwtVerifier`, signed by :class:`TokenIssuer`.

Verification contract (every failure is ``ModelgateError(UNAUTHENTICATED)``, never a 5xx):

- Asymmetric algorithms only (RS*, PS*, ES*), from a configured list. The token's ``alg`` is
  checked against that list before any key is looked up, so ``none`` and every ``HS*`` are
  refused outright: a token MACed with an RSA public key as the HMAC secret (the HS/RS
  confusion attack) never reaches a key. The key must also fit the algorithm (an RSA key for
  RS*/PS*, an EC key on the algorithm's curve for ES*), and a JWK that names its ``alg`` is
  used with that algorithm only.
- Every token names its key (``kid``). Keys are static PEMs, a JWKS URL, or both (a static
  key wins a ``kid`` clash). The JWKS is cached for ``jwks_cache_s``; an unknown ``kid``
  causes at most one refresh, and the JWKS URL is fetched at most once per
  :data:`JWKS_MIN_REFRESH_S` whatever the reason, so neither made-up ``kid`` values nor an
  outage of the JWKS server turn requests into a flood of fetches. A failed fetch keeps the
  last good key set (even past ``jwks_cache_s``); without one, tokens are refused with
  "cannot verify tokens right now".
- ``exp``, ``iss``, ``aud`` and ``sub`` are required; ``iss`` and ``aud`` must match (``aud``
  may be a list that contains ours); ``exp``, ``nbf`` and ``iat`` are whole numbers of
  seconds, checked against ``clock`` with ``leeway_s`` (at most :data:`MAX_LEEWAY_S`) of
  clock skew. A token may live at most ``max_lifetime_s``: ``exp`` no further than that from
  now, nor from ``iat`` (so ``exp: 1e308`` or a ten-year token is refused).

Tokens are never logged, and error messages never echo them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import httpx
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "DEFAULT_MAX_LIFETIME_S",
    "JWKS_MIN_REFRESH_S",
    "MAX_LEEWAY_S",
    "JwtVerifier",
    "SigningAlgorithm",
    "TokenIssuer",
    "claims_to_identity",
    "generate_signing_key",
    "looks_like_jwt",
]

log = logging.getLogger("modelgate.identity.jwt")

SigningAlgorithm: TypeAlias = Literal["RS256", "ES256"]

#: the most clock skew a verifier may tolerate, in seconds
MAX_LEEWAY_S = 60.0
#: the least time between two fetches of the JWKS URL, in seconds
JWKS_MIN_REFRESH_S = 30.0
#: the longest a verified token may live by default (``exp`` from now, and from ``iat``)
DEFAULT_MAX_LIFETIME_S = 86_400

_MAX_TOKEN_CHARS = 8192  # more than any sane Authorization header carries
_MAX_JWKS_BYTES = 512 * 1024
_MIN_RSA_BITS = 2048
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
_ASYMMETRIC = _RSA_ALGORITHMS | _EC_CURVES.keys()
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
_B64URL = "[A-Za-z0-9_-]"
# The signature may be empty, so that an unsigned token reaches the verifier and is refused
# for its algorithm rather than mistaken for a malformed API key.
_JWT_SHAPE = re.compile(rf"{_B64URL}+\.{_B64URL}+\.{_B64URL}*")
_API_KEY_START = "mg_"  # see modelgate.core.access.keys

_PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _unauthenticated(message: str) -> ModelgateError:
    return ModelgateError(ErrorKind.UNAUTHENTICATED, message)


_MALFORMED = "the bearer token is not a well-formed JWT"
_UNAVAILABLE = "cannot verify tokens right now: the signing keys cannot be fetched"
_UNKNOWN_KID = "the token's signing key (kid) is not known"


def looks_like_jwt(credential: str) -> bool:
    """Is ``credential`` shaped like a compact JWT (three base64url segments)?

    Shape only: nothing is decoded or verified. API keys (``mg_live_...``) never match.
    """
    return (
        len(credential) <= _MAX_TOKEN_CHARS
        and not credential.startswith(_API_KEY_START)
        and _JWT_SHAPE.fullmatch(credential) is not None
    )


@dataclass(frozen=True, slots=True)
class _VerificationKey:
    key: _PublicKey
    algorithm: str | None = None  # the JWK's ``alg``, where it names one

    def fits(self, algorithm: str) -> bool:
        if self.algorithm is not None and self.algorithm != algorithm:
            return False
        if algorithm in _RSA_ALGORITHMS:
            return isinstance(self.key, rsa.RSAPublicKey)
        curve = _EC_CURVES.get(algorithm)
        return (
            curve is not None
            and isinstance(self.key, ec.EllipticCurvePublicKey)
            and isinstance(self.key.curve, curve)
        )


class _JwksError(Exception):
    """The JWKS URL gave no usable key set (the message names why, never a token)."""


class JwtVerifier:
    """Verifies JWT bearer tokens; see the module docstring for the full contract.

    Construction checks the configuration and raises ``ValueError`` for a bad one (no key
    source, a symmetric or unknown algorithm, a leeway over :data:`MAX_LEEWAY_S`, a maximum
    lifetime that is not positive, a static key that is not an RSA (2048 bits or more) or EC
    public key in PEM).
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        public_keys: Mapping[str, str] | None = None,
        jwks_url: str | None = None,
        leeway_s: float = MAX_LEEWAY_S,
        algorithms: tuple[str, ...] = ("RS256", "ES256"),
        jwks_cache_s: float = 300.0,
        http_timeout_s: float = 3.0,
        max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S,
        clock: Callable[[], float] = time.time,
    ):
        if not issuer or not audience:
            raise ValueError("a JWT verifier needs an issuer and an audience")
        if max_lifetime_s <= 0:
            raise ValueError(f"max_lifetime_s must be positive, not {max_lifetime_s}")
        if not public_keys and not jwks_url:
            raise ValueError("a JWT verifier needs public_keys, a jwks_url or both")
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway_s must be within [0, {MAX_LEEWAY_S:g}], not {leeway_s}")
        refused = sorted(set(algorithms) - _ASYMMETRIC)
        if not algorithms or refused:
            raise ValueError(f"only asymmetric algorithms can verify tokens, not {refused}")
        if jwks_url is not None and httpx.URL(jwks_url).scheme not in ("http", "https"):
            raise ValueError(f"jwks_url must be an http(s) URL, not {jwks_url!r}")
        if jwks_cache_s <= 0 or http_timeout_s <= 0:
            raise ValueError("jwks_cache_s and http_timeout_s must be positive")
        self._issuer = issuer
        self._audience = audience
        self._static = {
            kid: _VerificationKey(_load_public_pem(kid, pem))
            for kid, pem in (public_keys or {}).items()
        }
        self._jwks_url = jwks_url
        self._leeway = leeway_s
        self._max_lifetime_s = max_lifetime_s
        self._algorithms = frozenset(algorithms)
        self._jwks_cache_s = jwks_cache_s
        self._http_timeout_s = http_timeout_s
        self._clock = clock
        self._jwks: dict[str, _VerificationKey] = {}
        self._jwks_fetched_at: float | None = None  # last fetch that gave a key set
        self._jwks_tried_at: float | None = None  # last fetch, whatever it gave
        self._jwks_lock = asyncio.Lock()

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` once every check passes; UNAUTHENTICATED otherwise."""
        return (await self.verify_with_kid(token))[0]

    async def verify_with_kid(self, token: str) -> tuple[dict[str, Any], str]:
        """:meth:`verify`, and the ``kid`` of the key that checked the token."""
        if not isinstance(token, str) or not looks_like_jwt(token):
            raise _unauthenticated(_MALFORMED)
        header = _decode_segment(token.partition(".")[0])
        if not isinstance(header, dict):
            raise _unauthenticated(_MALFORMED)
        algorithm = header.get("alg")
        # Checked before any key is touched: this is what stops alg=none and HS/RS confusion.
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            accepted = ", ".join(sorted(self._algorithms))
            raise _unauthenticated(f"the token's signing algorithm is not accepted ({accepted})")
        if "crit" in header:
            raise _unauthenticated("the token uses critical header extensions")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthenticated("the token names no signing key (kid)")
        key = await self._key(kid)
        if not key.fits(algorithm):
            raise _unauthenticated("the token's algorithm does not fit its signing key")
        # The one algorithm passed on is the token's own, but only once it is known to be in
        # the configured asymmetric list and to fit the key the token names.
        claims = self._decode(token, key, algorithm)
        self._check_times(claims)
        return claims, kid

    def _decode(self, token: str, key: _VerificationKey, algorithm: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                # Times are checked by _check_times against the injected clock.
                options={
                    "require": _REQUIRED_CLAIMS,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.MissingRequiredClaimError as error:
            raise _unauthenticated(f"the token has no {error.claim!r} claim") from error
        except jwt.InvalidSignatureError as error:
            raise _unauthenticated("the token's signature is not valid") from error
        except jwt.InvalidIssuerError as error:
            raise _unauthenticated("the token's issuer (iss) is not accepted") from error
        except jwt.InvalidAudienceError as error:
            raise _unauthenticated("the token's audience (aud) is not this service") from error
        except jwt.PyJWTError as error:
            raise _unauthenticated("the token is not valid") from error
        if not claims["sub"]:
            raise _unauthenticated("the token has an empty subject (sub)")
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        exp = _numeric_date(claims, "exp")
        if exp is None or exp <= now - self._leeway:
            raise _unauthenticated("the token has expired")
        longest = self._max_lifetime_s + self._leeway
        if exp - now > longest:
            raise _unauthenticated(
                f"the token's 'exp' is more than {self._max_lifetime_s} s away (its lifetime is "
                "too long)"
            )
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and nbf > now + self._leeway:
            raise _unauthenticated("the token is not valid yet (nbf)")
        iat = _numeric_date(claims, "iat")
        if iat is not None and iat > now + self._leeway:
            raise _unauthenticated("the token was issued in the future (iat)")
        if iat is not None and exp - iat > longest:
            raise _unauthenticated(
                f"the token lives more than {self._max_lifetime_s} s from 'iat' to 'exp'"
            )

    async def _key(self, kid: str) -> _VerificationKey:
        key = self._static.get(kid)
        if key is not None:
            return key
        if self._jwks_url is None:
            raise _unauthenticated(_UNKNOWN_KID)
        key = self._jwks.get(kid)
        fresh = _within(self._clock(), self._jwks_fetched_at, self._jwks_cache_s)
        # A cached key serves while another request refreshes an expired set, rather than
        # every request waiting on the JWKS server.
        if key is None or not (fresh or self._jwks_lock.locked()):
            await self._refresh()
            key = self._jwks.get(kid)
        if key is not None:
            return key
        raise _unauthenticated(_UNAVAILABLE if self._jwks_fetched_at is None else _UNKNOWN_KID)

    async def _refresh(self) -> None:
        """Fetch the JWKS unless a fetch started less than JWKS_MIN_REFRESH_S ago.

        Concurrent callers wait for one fetch rather than each making their own.
        """
        async with self._jwks_lock:
            now = self._clock()
            if _within(now, self._jwks_tried_at, JWKS_MIN_REFRESH_S):
                return
            self._jwks_tried_at = now
            try:
                keys = await self._fetch(self._jwks_url)
            except _JwksError as error:
                kept = f"keeping {len(self._jwks)} cached keys" if self._jwks else "no keys"
                log.warning("cannot fetch the JWKS from %s (%s); %s", self._jwks_url, error, kept)
                return
            self._jwks = keys
            self._jwks_fetched_at = self._clock()

    async def _fetch(self, url: str | None) -> dict[str, _VerificationKey]:
        if url is None:
            raise _JwksError("no JWKS URL")
        body = bytearray()
        try:
            # httpx's timeouts bound each connect and read; the outer one bounds the whole
            # fetch, so a server that trickles bytes cannot hold requests either.
            async with (
                asyncio.timeout(self._http_timeout_s),
                httpx.AsyncClient(timeout=httpx.Timeout(self._http_timeout_s)) as client,
                client.stream("GET", url, headers={"Accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    raise _JwksError(f"HTTP {response.status_code}")
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_JWKS_BYTES:
                        raise _JwksError(f"larger than {_MAX_JWKS_BYTES} bytes")
        except TimeoutError as error:
            raise _JwksError(f"no answer within {self._http_timeout_s:g} s") from error
        except httpx.HTTPError as error:
            raise _JwksError(type(error).__name__) from error
        return _parse_jwks(bytes(body))


def _within(now: float, then: float | None, span: float) -> bool:
    # A clock that went backwards counts as "not within", so a step back cannot pin a cache.
    return then is not None and 0 <= now - then < span


def _decode_segment(segment: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):  # binascii, Unicode and JSON errors are ValueErrors
        raise _unauthenticated(_MALFORMED) from None


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | None:
    """A time claim: whole seconds only. RFC 7519 allows fractions, but no issuer we know of
    sends them, and refusing floats keeps ``1e308`` and ``NaN`` out of every comparison."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _unauthenticated(f"the token's {name!r} claim is not a number of whole seconds")
    return value


def _strong_enough(key: _PublicKey) -> bool:
    return not isinstance(key, rsa.RSAPublicKey) or key.key_size >= _MIN_RSA_BITS


def _load_public_pem(kid: str, pem: str) -> _PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ValueError(f"public key {kid!r} is not a PEM public key") from error
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"public key {kid!r}: only RSA and EC keys can verify tokens")
    if not _strong_enough(key):
        raise ValueError(f"public key {kid!r}: RSA keys need at least {_MIN_RSA_BITS} bits")
    return key


def _parse_jwks(body: bytes) -> dict[str, _VerificationKey]:
    """The usable signing keys of a JWK set, by kid; unusable keys are skipped."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise _JwksError("not JSON") from error
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise _JwksError("no 'keys' list")
    keys: dict[str, _VerificationKey] = {}
    for entry in entries:
        parsed = _jwk(entry)
        if parsed is not None:
            keys.setdefault(parsed[0], parsed[1])
    return keys


def _jwk(entry: object) -> tuple[str, _VerificationKey] | None:
    if not isinstance(entry, dict):
        return None
    kid, alg = entry.get("kid"), entry.get("alg")
    if (
        not isinstance(kid, str)
        or not kid
        or entry.get("kty") not in ("RSA", "EC")  # never "oct": no shared secrets here
        or entry.get("use", "sig") != "sig"
        or (alg is not None and alg not in _ASYMMETRIC)
    ):
        return None
    if "d" in entry:
        log.warning("the JWKS publishes private key material for kid %r; key ignored", kid)
        return None
    try:
        key = jwt.PyJWK(entry).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        log.warning("the JWKS key %r cannot be loaded; key ignored", kid)
        return None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) or not _strong_enough(key):
        return None
    return kid, _VerificationKey(key, alg)


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


class TokenIssuer:
    """Signs access tokens for the OAuth2 client-credentials grant.

    A token carries ``iss``, ``aud``, ``sub``, ``tenant``, ``scope`` (space separated),
    ``iat``, ``nbf``, ``exp`` (``iat + ttl_s``) and a random ``jti``; its header names
    ``kid``. :meth:`jwks` (or :attr:`public_key_pem`, for ``public_keys``) is what to publish
    so that a :class:`JwtVerifier` with the same issuer and audience accepts exactly what this
    issuer signs. ``algorithm`` defaults to the one the key fits; ``ValueError`` for a key
    that fits neither RS256 (RSA, 2048 bits or more) nor ES256 (EC P-256).
    """

    def __init__(
        self,
        private_key_pem: str,
        *,
        kid: str,
        issuer: str,
        audience: str,
        ttl_s: int = 900,
        algorithm: SigningAlgorithm | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if not kid or not issuer or not audience:
            raise ValueError("a token issuer needs a kid, an issuer and an audience")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, not {ttl_s}")
        try:
            key = serialization.load_pem_private_key(private_key_pem.encode("utf-8"), None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise ValueError("private_key_pem is not an unencrypted PEM private key") from error
        fitted: SigningAlgorithm
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= _MIN_RSA_BITS:
            fitted = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            fitted = "ES256"
        else:
            raise ValueError("the signing key must be RSA (2048+ bits) or EC P-256")
        if algorithm is not None and algorithm != fitted:
            raise ValueError(f"the signing key fits {fitted}, not {algorithm}")
        self._key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = key
        self._kid = kid
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self.algorithm: SigningAlgorithm = fitted
        self.ttl_s = ttl_s

    def issue(self, subject: str, tenant_id: str, scopes: Iterable[str]) -> str:
        """A signed token for ``subject`` in ``tenant_id`` with ``scopes``, valid ``ttl_s``.

        ``ValueError`` for an empty subject or tenant, the operators' tenant ``*``, or a scope
        that is empty or contains whitespace (it could not survive the space-separated claim).
        """
        if not subject or not tenant_id or tenant_id == ADMIN_TENANT:
            raise ValueError("a token needs a subject and a tenant other than the operators'")
        scope_list = sorted(set(scopes))
        if any(not s or any(c.isspace() for c in s) for s in scope_list):
            raise ValueError("scopes must be non-empty and contain no whitespace")
        now = int(self._clock())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "tenant": tenant_id,
            "scope": " ".join(scope_list),
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_s,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(
            claims, self._key, algorithm=self.algorithm, headers={"kid": self._kid, "typ": "JWT"}
        )

    def jwks(self) -> dict[str, Any]:
        """The public JWK set to publish (one key, with ``kid``, ``use`` and ``alg``)."""
        public = self._key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        return {"keys": [{**jwk, "kid": self._kid, "use": "sig", "alg": self.algorithm}]}

    @property
    def public_key_pem(self) -> str:
        """The public key in PEM, for a verifier's ``public_keys={kid: pem}``."""
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    @property
    def kid(self) -> str:
        return self._kid


def generate_signing_key(algorithm: SigningAlgorithm = "ES256") -> str:
    """A new private key for :class:`TokenIssuer`, as unencrypted PKCS#8 PEM.

    RS256: RSA 2048 bits (what common identity providers use); ES256: EC P-256.
    """
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"algorithm must be RS256 or ES256, not {algorithm!r}")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
