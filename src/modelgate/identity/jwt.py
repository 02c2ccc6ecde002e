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
  :data:`~modelgate.identity.jwt_keys.JWKS_MIN_REFRESH_S` whatever the reason, so neither
  made-up ``kid`` values nor an outage of the JWKS server turn requests into a flood of
  fetches. A failed fetch keeps the last good key set (even past ``jwks_cache_s``); without
  one, tokens are refused with "cannot verify tokens right now" (``jwt_keys.py``).
- ``exp``, ``iss``, ``aud`` and ``sub`` are required; ``iss`` and ``aud`` must match (``aud``
  may be a list that contains ours); ``exp``, ``nbf`` and ``iat`` are whole numbers of
  seconds, checked against ``clock`` with ``leeway_s`` (at most :data:`MAX_LEEWAY_S`) of
  clock skew. A token may live at most ``max_lifetime_s``: ``exp`` no further than that from
  now, nor from ``iat`` (so ``exp: 1e308`` or a ten-year token is refused) (``jwt_claims.py``).

Tokens are never logged, and error messages never echo them.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeAlias

import httpx
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.identity.jwt_claims import check_token_times
from modelgate.identity.jwt_keys import (
    ASYMMETRIC_ALGORITHMS,
    MIN_RSA_BITS,
    VerificationKey,
    VerificationKeys,
)

__all__ = [
    "DEFAULT_MAX_LIFETIME_S",
    "MAX_LEEWAY_S",
    "JwtVerifier",
    "SigningAlgorithm",
    "TokenIssuer",
    "generate_signing_key",
    "looks_like_jwt",
]

SigningAlgorithm: TypeAlias = Literal["RS256", "ES256"]

#: the most clock skew a verifier may tolerate, in seconds
MAX_LEEWAY_S = 60.0
#: the longest a verified token may live by default (``exp`` from now, and from ``iat``)
DEFAULT_MAX_LIFETIME_S = 86_400

_MAX_TOKEN_CHARS = 8192  # more than any sane Authorization header carries
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]

_B64URL = "[A-Za-z0-9_-]"
# The signature may be empty, so that an unsigned token reaches the verifier and is refused
# for its algorithm rather than mistaken for a malformed API key.
_JWT_SHAPE = re.compile(rf"{_B64URL}+\.{_B64URL}+\.{_B64URL}*")
_API_KEY_START = "mg_"  # see modelgate.core.access.keys


def _unauthenticated(message: str) -> ModelgateError:
    return ModelgateError(ErrorKind.UNAUTHENTICATED, message)


_MALFORMED = "the bearer token is not a well-formed JWT"


def looks_like_jwt(credential: str) -> bool:
    """Is ``credential`` shaped like a compact JWT (three base64url segments)?

    Shape only: nothing is decoded or verified. API keys (``mg_live_...``) never match.
    """
    return (
        len(credential) <= _MAX_TOKEN_CHARS
        and not credential.startswith(_API_KEY_START)
        and _JWT_SHAPE.fullmatch(credential) is not None
    )


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
        refused = sorted(set(algorithms) - ASYMMETRIC_ALGORITHMS)
        if not algorithms or refused:
            raise ValueError(f"only asymmetric algorithms can verify tokens, not {refused}")
        if jwks_url is not None and httpx.URL(jwks_url).scheme not in ("http", "https"):
            raise ValueError(f"jwks_url must be an http(s) URL, not {jwks_url!r}")
        if jwks_cache_s <= 0 or http_timeout_s <= 0:
            raise ValueError("jwks_cache_s and http_timeout_s must be positive")
        self._issuer = issuer
        self._audience = audience
        self._keys = VerificationKeys(
            public_keys or {},
            jwks_url,
            cache_s=jwks_cache_s,
            http_timeout_s=http_timeout_s,
            clock=clock,
        )
        self._leeway = leeway_s
        self._max_lifetime_s = max_lifetime_s
        self._algorithms = frozenset(algorithms)
        self._clock = clock

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
        key = await self._keys.key(kid)
        if not key.fits(algorithm):
            raise _unauthenticated("the token's algorithm does not fit its signing key")
        # The one algorithm passed on is the token's own, but only once it is known to be in
        # the configured asymmetric list and to fit the key the token names.
        claims = self._decode(token, key, algorithm)
        check_token_times(
            claims, now=self._clock(), leeway_s=self._leeway, max_lifetime_s=self._max_lifetime_s
        )
        return claims, kid

    def _decode(self, token: str, key: VerificationKey, algorithm: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                # Times are checked by check_token_times against the injected clock.
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


def _decode_segment(segment: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):  # binascii, Unicode and JSON errors are ValueErrors
        raise _unauthenticated(_MALFORMED) from None


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
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= MIN_RSA_BITS:
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
