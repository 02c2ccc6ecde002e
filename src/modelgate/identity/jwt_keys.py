"""The keys that check JWT signatures: static PEMs, a JWKS URL's key set, or both.

A static key wins a ``kid`` clash. The JWKS is cached for ``cache_s``; an unknown ``kid``
causes at most one refresh, and the URL is fetched at most once per
:data:`JWKS_MIN_REFRESH_S` whatever the reason, so neither made-up ``kid`` values nor an
outage of the JWKS server turn requests into a flood of fetches. A failed fetch keeps the
last good key set (even past ``cache_s``); without one, tokens are refused with "cannot
verify tokens right now". Only RSA (2048 bits or more) and EC public keys are kept: never a
shared secret (``oct``), never a key published with its private part.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

import httpx
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "JWKS_MIN_REFRESH_S",
    "MIN_RSA_BITS",
    "VerificationKey",
    "VerificationKeys",
]

# The verifier's logger, as before these keys had a module of their own: operators' log
# filters keep matching the JWKS warnings.
log = logging.getLogger("modelgate.identity.jwt")

#: the least time between two fetches of the JWKS URL, in seconds
JWKS_MIN_REFRESH_S = 30.0
#: the smallest RSA key that may sign or verify a token
MIN_RSA_BITS = 2048

_MAX_JWKS_BYTES = 512 * 1024
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
#: every algorithm a token may be verified with: RS*, PS* and ES*, never HS* nor ``none``
ASYMMETRIC_ALGORITHMS = _RSA_ALGORITHMS | _EC_CURVES.keys()

_PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_UNAVAILABLE = "cannot verify tokens right now: the signing keys cannot be fetched"
_UNKNOWN_KID = "the token's signing key (kid) is not known"


def _unauthenticated(message: str) -> ModelgateError:
    return ModelgateError(ErrorKind.UNAUTHENTICATED, message)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key: _PublicKey
    algorithm: str | None = None  # the JWK's ``alg``, where it names one

    def fits(self, algorithm: str) -> bool:
        """May this key check a token signed with ``algorithm``? An RSA key for RS*/PS*, an
        EC key on the algorithm's curve for ES*, and only its own ``alg`` when it names one."""
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


class VerificationKeys:
    """The keys of one verifier, by ``kid``: ``public_keys`` (``{kid: PEM}``, loaded now;
    ``ValueError`` for one that is not an RSA (2048 bits or more) or EC public key) and the
    key set at ``jwks_url``, fetched when first asked for. The caller checks the settings."""

    def __init__(
        self,
        public_keys: Mapping[str, str],
        jwks_url: str | None,
        *,
        cache_s: float,
        http_timeout_s: float,
        clock: Callable[[], float],
    ):
        self._static = {
            kid: VerificationKey(_load_public_pem(kid, pem)) for kid, pem in public_keys.items()
        }
        self._jwks_url = jwks_url
        self._jwks_cache_s = cache_s
        self._http_timeout_s = http_timeout_s
        self._clock = clock
        self._jwks: dict[str, VerificationKey] = {}
        self._jwks_fetched_at: float | None = None  # last fetch that gave a key set
        self._jwks_tried_at: float | None = None  # last fetch, whatever it gave
        self._jwks_lock = asyncio.Lock()

    async def key(self, kid: str) -> VerificationKey:
        """The key named ``kid``; UNAUTHENTICATED when it is not known or cannot be fetched."""
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

    async def _fetch(self, url: str | None) -> dict[str, VerificationKey]:
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


def _strong_enough(key: _PublicKey) -> bool:
    return not isinstance(key, rsa.RSAPublicKey) or key.key_size >= MIN_RSA_BITS


def _load_public_pem(kid: str, pem: str) -> _PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ValueError(f"public key {kid!r} is not a PEM public key") from error
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"public key {kid!r}: only RSA and EC keys can verify tokens")
    if not _strong_enough(key):
        raise ValueError(f"public key {kid!r}: RSA keys need at least {MIN_RSA_BITS} bits")
    return key


def _parse_jwks(body: bytes) -> dict[str, VerificationKey]:
    """The usable signing keys of a JWK set, by kid; unusable keys are skipped."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise _JwksError("not JSON") from error
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise _JwksError("no 'keys' list")
    keys: dict[str, VerificationKey] = {}
    for entry in entries:
        parsed = _jwk(entry)
        if parsed is not None:
            keys.setdefault(parsed[0], parsed[1])
    return keys


def _jwk(entry: object) -> tuple[str, VerificationKey] | None:
    if not isinstance(entry, dict):
        return None
    kid, alg = entry.get("kid"), entry.get("alg")
    if (
        not isinstance(kid, str)
        or not kid
        or entry.get("kty") not in ("RSA", "EC")  # never "oct": no shared secrets here
        or entry.get("use", "sig") != "sig"
        or (alg is not None and alg not in ASYMMETRIC_ALGORITHMS)
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
    return kid, VerificationKey(key, alg)
