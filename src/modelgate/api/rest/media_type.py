"""Which request ``Content-Type`` a JSON route takes: every one whose body can be JSON.

``curl -d`` sends ``application/x-www-form-urlencoded``, ``requests`` and many scripts send
``text/plain`` or nothing, and Triton and KServe parse the body as JSON whatever the header
says (binary tensor data is told by ``Inference-Header-Content-Length``, not by the type).
So the body decides: a body that is not JSON gets the parser's 400. Refused at once, before
the body is read, is only a type whose body cannot be JSON: ``multipart/*`` (``curl -F``,
an HTML form upload), whose parts modelgate does not unpack.
"""

from __future__ import annotations

from modelgate.errors import invalid

__all__ = ["check_content_type"]

_MULTIPART = b"multipart/"
_COMMON = frozenset(
    (b"application/json", b"application/x-www-form-urlencoded", b"application/octet-stream")
)


def check_content_type(value: bytes) -> None:
    """INVALID_ARGUMENT for a ``Content-Type`` whose body cannot be JSON; else nothing."""
    if value in _COMMON:  # what clients send: one lookup
        return
    if value[:10].lower() == _MULTIPART:
        raise invalid(
            f"unsupported content type '{value.decode('latin-1')[:100]}': send the JSON body "
            "itself (curl -d or --data-binary, not -F), or application/octet-stream with "
            "Inference-Header-Content-Length for binary tensor data"
        )
