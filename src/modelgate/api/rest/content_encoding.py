"""Compressed bodies: requests sent with ``Content-Encoding: gzip | deflate | identity``,
and inference answers compressed for a client whose ``Accept-Encoding`` asks.

tritonclient's ``request_compression_algorithm`` sends ``gzip`` (RFC 1952) or ``deflate``
(which HTTP means as the zlib format of RFC 1950, as tritonclient and RFC 9110 say), and
browsers and proxies may send ``x-gzip``. The body is inflated as it arrives, never more
than the route's limit past what it holds already (zlib's ``max_length``): a small body that
would inflate to gigabytes (a zip bomb) is refused with 413 once the limit is passed,
without allocating the rest. The compressed size is held to the same limit before (api/rest/
asgi.py ``receive_body``), so a request costs at most the limit in each form.

An unknown coding is refused with 415 in the route's error shape; a body that is not valid
data for its coding with 400. A request without the header never reaches this module.

Answers: ``POST .../infer`` compresses an answer of at least 1 KiB with gzip or deflate when
``Accept-Encoding`` names one (tritonclient's ``response_compression_algorithm``; its
``Inference-Header-Content-Length`` still counts the uncompressed JSON, as Triton does), at
zlib's fastest level: tensors of floats shrink little, so the point is text and integers
without spending much CPU. Other routes answer uncompressed.
"""

from __future__ import annotations

import zlib

from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["BodyDecoder", "body_decoder", "compress_answer"]

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


#: answers smaller than this go out as they are: a gzip header and trailer cost 18 bytes
_MIN_COMPRESSED = 1024


def compress_answer(accept_encoding: bytes, payload: bytes) -> tuple[bytes, bytes] | None:
    """(coding, compressed payload) for an answer whose request said ``accept_encoding``;
    None: send it as it is (small, or no coding the client takes)."""
    if len(payload) < _MIN_COMPRESSED:
        return None
    for item in accept_encoding.lower().split(b","):
        coding, _, quality = item.partition(b";")
        coding = coding.strip()
        if coding not in (b"gzip", b"deflate") or _refused(quality):
            continue
        packer = zlib.compressobj(1, zlib.DEFLATED, _WBITS[coding])
        return coding, packer.compress(payload) + packer.flush()
    return None


def _refused(quality: bytes) -> bool:
    """Whether an ``Accept-Encoding`` item's parameters say ``q=0``."""
    name, _, value = quality.strip().partition(b"=")
    try:
        return name.strip() == b"q" and float(value) == 0.0
    except ValueError:
        return False
