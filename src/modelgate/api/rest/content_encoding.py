"""Request bodies sent compressed: ``Content-Encoding: gzip | deflate | identity``.

tritonclient's ``request_compression_algorithm`` sends ``gzip`` (RFC 1952) or ``deflate``
(which HTTP means as the zlib format of RFC 1950, as tritonclient and RFC 9110 say), and
browsers and proxies may send ``x-gzip``. The body is inflated as it arrives, never more
than the route's limit past what it holds already (zlib's ``max_length``): a small body that
would inflate to gigabytes (a zip bomb) is refused with 413 once the limit is passed,
without allocating the rest. The compressed size is held to the same limit before (api/rest/
asgi.py ``receive_body``), so a request costs at most the limit in each form.

An unknown coding is refused with 415 in the route's error shape; a body that is not valid
data for its coding with 400. A request without the header never reaches this module.

Answers are not compressed, whatever ``Accept-Encoding`` says (HTTP allows it; tritonclient
reads an uncompressed answer to ``response_compression_algorithm`` as it is): zlib's
fastest level runs at about 90 MB/s on a JSON answer and 35 MB/s on float tensors (which
shrink by a tenth), several times the cost of encoding the answer, on the event loop, and
requests, httpx and aiohttp ask for gzip by default. A proxy in front can compress.
"""

from __future__ import annotations

import zlib

from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["BodyDecoder", "body_decoder"]

#: zlib's ``wbits`` for each coding: gzip's header and trailer, or zlib's
_WBITS = {
    b"gzip": 16 + zlib.MAX_WBITS,
    b"x-gzip": 16 + zlib.MAX_WBITS,
    b"deflate": zlib.MAX_WBITS,
}
_IDENTITY = b"identity"


class BodyDecoder:
    """Inflates one body chunk by chunk, refusing it once it inflates past ``limit``."""

    __slots__ = ("_coding", "_inflater", "_limit", "_parts", "_size", "_wbits")

    def __init__(self, coding: str, wbits: int, limit: int):
        self._coding = coding
        self._wbits = wbits
        self._limit = limit
        self._inflater = zlib.decompressobj(wbits)
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        inflater = self._inflater
        while data:
            if inflater.eof:  # a gzip body may hold several members (RFC 1952 2.2)
                inflater = self._inflater = zlib.decompressobj(self._wbits)
            room = self._limit - self._size + 1  # one byte past the limit tells it is over
            try:
                part = inflater.decompress(data, room)
            except zlib.error as exc:
                raise invalid(f"the body is not valid {self._coding} data: {exc}") from None
            self._size += len(part)
            if self._size > self._limit:
                raise ModelgateError(
                    ErrorKind.PAYLOAD_TOO_LARGE,
                    f"the decompressed body is over the limit of {self._limit} bytes",
                )
            self._parts.append(part)
            # what follows the end of a member, or (only when ``room`` was filled, which is
            # over the limit) the input zlib had no room to inflate
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail

    def finish(self) -> bytes:
        if not self._inflater.eof:
            raise invalid(f"the {self._coding} body ends before its compressed data does")
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)


def body_decoder(content_encoding: bytes, limit: int) -> BodyDecoder | None:
    """The decoder of a ``Content-Encoding`` value (None: ``identity``, nothing to undo);
    UNSUPPORTED (answered 415) for a coding modelgate does not inflate, or for more than
    one coding."""
    coding = content_encoding.strip().lower()
    if coding == _IDENTITY or not coding:
        return None
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise ModelgateError(
            ErrorKind.UNSUPPORTED,
            f"Content-Encoding '{content_encoding.decode('latin-1')}' is not supported; "
            "send gzip, deflate or identity",
            details={"http_status": 415},
        )
    return BodyDecoder(coding.decode("ascii"), wbits, limit)
