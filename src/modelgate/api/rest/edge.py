"""Inference over ``GET``, for HTTP caches in front of modelgate (docs/caching.md).

``GET /v2/models/{m}[/versions/{v}]/infer?input=<request>`` carries the JSON body a POST
would, as base64url (RFC 4648 section 5). The canonical form, the one to send so that equal
requests make equal URLs: the JSON in its most compact form with sorted keys
(``json.dumps(body, separators=(",", ":"), sort_keys=True)``), UTF-8, base64url without
``=`` padding, and ``input`` the only query parameter. Padding is accepted, and nothing is
re-encoded, so a different spelling of the same request is answered but cached apart.

Offered only for models whose manifest has a ``cache`` section. The answer carries
``ETag`` (a digest of its body), ``Cache-Control`` (``private``, or ``public`` for a
``shareable`` model, with ``max-age`` what is left of the entry's ttl), ``Vary:
Authorization, X-Api-Key``, and answers ``If-None-Match`` with 304. An answer that must not
be kept (a request naming a data subject, or sending ``Cache-Control: no-store``) says
``no-store``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import time
from urllib.parse import parse_qs

from modelgate.core.serving.manifest import CacheSpec
from modelgate.core.serving.requests import InferenceRequest, InferenceResponse
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["MAX_QUERY_INPUT", "decode_query_input", "edge_headers", "etag_of", "not_modified"]

#: the longest ``input`` accepted, in characters (about 6 KiB of JSON); a longer one
#: answers 413. It stays well inside the request-line-and-headers limit
#: (``http_max_header_bytes``, 16 KiB: past it the answer is 431) and nginx's default
#: 8 KiB request line.
MAX_QUERY_INPUT = 8 * 1024
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def decode_query_input(query: bytes, limit: int = MAX_QUERY_INPUT) -> bytes:
    """The JSON request a query string carries; INVALID_ARGUMENT (400) for anything but
    exactly one well-formed ``input``, PAYLOAD_TOO_LARGE (413) past ``limit``."""
    if len(query) > limit + 64:  # before parsing anything
        raise _too_large(limit)
    try:
        fields = parse_qs(query.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise invalid(
            "malformed query string; send ?input=<base64url of the JSON request>"
        ) from None
    unknown = sorted(set(fields) - {"input"})
    if unknown:
        raise invalid(f"unknown query parameter(s) {', '.join(unknown)}; only 'input' is read")
    values = fields.get("input")
    if not values:
        raise invalid("missing query parameter 'input' (base64url of the JSON request)")
    if len(values) > 1:
        raise invalid("query parameter 'input' is given twice")
    value = values[0]
    if len(value) > limit:
        raise _too_large(limit)
    if not _BASE64URL.fullmatch(value) or len(value.rstrip("=")) % 4 == 1:
        raise invalid("query parameter 'input' is not base64url (A-Z a-z 0-9 - _)")
    try:
        return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise invalid("query parameter 'input' is not base64url (A-Z a-z 0-9 - _)") from None


def etag_of(payload: bytes) -> bytes:
    """A strong validator: the digest of the body (the same answer, the same tag)."""
    return b'"' + hashlib.sha256(payload).hexdigest()[:32].encode() + b'"'


def not_modified(if_none_match: bytes | None, etag: bytes) -> bool:
    """Does ``If-None-Match`` name this tag (weak comparison, as RFC 9110 asks for it)?"""
    if if_none_match is None:
        return False
    tags = [t.strip() for t in if_none_match.split(b",")]
    return b"*" in tags or any(t.removeprefix(b"W/") == etag for t in tags)


def edge_headers(
    spec: CacheSpec | None,
    request: InferenceRequest,
    response: InferenceResponse,
    etag: bytes,
    now: float | None = None,
) -> list[tuple[bytes, bytes]]:
    """``ETag``, ``Cache-Control`` and ``Vary`` of a GET inference. ``spec`` None (the
    version that answered does not cache), a stale answer, a request naming a data subject
    or sending ``no-store``: nothing may keep it."""
    vary = (b"vary", b"Authorization, X-Api-Key")
    directives = (request.cache_control or "").lower()
    if (
        spec is None
        or response.cache in (None, "stale")
        or "subject" in request.parameters
        or "no-store" in directives
    ):
        return [(b"etag", etag), (b"cache-control", b"private, no-store"), vary]
    left = spec.ttl_seconds
    if response.cached_at is not None:  # a hit: what is left of its entry's ttl
        left -= (time.time() if now is None else now) - response.cached_at
    scope = b"public" if spec.shareable else b"private"
    max_age = str(max(0, math.floor(left))).encode()
    return [(b"etag", etag), (b"cache-control", scope + b", max-age=" + max_age), vary]


def _too_large(limit: int) -> ModelgateError:
    return ModelgateError(
        ErrorKind.PAYLOAD_TOO_LARGE,
        f"query parameter 'input' is over {limit} characters; POST the request instead",
    )
