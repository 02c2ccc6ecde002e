"""A ``ModelInferRequest`` as its bytes: the model it names, read without decoding the rest,
so that a caller the refusal memo refuses is answered before its tensors are parsed
(issue 15), and the message decoded only when it will be used.

``ModelInfer`` is registered with no request deserializer (api/grpc/build.py), so the
servicer receives the message's bytes. Protobuf serializers write a message's fields in
field-number order, ``model_name`` (1) and ``model_version`` (2) first: :func:`model_of`
reads those two and gives up (None: decode the whole message first) on anything else. A
message that repeats ``model_name`` later (protobuf keeps the last) is refused from the
memo as its first one says, which only a client of its own can be: a refusal by a
model's own limit is the caller's either way.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from tritonclient.grpc import service_pb2

from modelgate.errors import invalid

__all__ = ["decode_message", "model_of"]

_NAME_TAG = 0x0A  # field 1, length-delimited
_VERSION_TAG = 0x12  # field 2, length-delimited
#: a model name or version longer than this is left to the full decode
_MAX_FIELD = 1024


def model_of(raw: bytes) -> tuple[str, str | None] | None:
    """(``model_name``, ``model_version`` or None) of a serialized ``ModelInferRequest``
    when they are its first fields; None when that is not known without decoding it."""
    name, at = _string(raw, 0, _NAME_TAG)
    if name is None:
        return None
    version, _ = _string(raw, at, _VERSION_TAG)
    return name, version or None


def decode_message(raw: bytes) -> Any:
    """The ``ModelInferRequest`` of ``raw``; INVALID_ARGUMENT when it is not one."""
    try:
        return service_pb2.ModelInferRequest.FromString(raw)
    except DecodeError:
        raise invalid("the request is not a ModelInferRequest message") from None


def _string(raw: bytes, at: int, tag: int) -> tuple[str | None, int]:
    """The string of field ``tag`` at ``at`` and where the next field starts; (None, at)
    when ``at`` holds another field, or a string this does not read."""
    if at >= len(raw) or raw[at] != tag:
        return None, at
    length = raw[at + 1] if at + 1 < len(raw) else 0x80
    start = at + 2
    if length & 0x80:  # a two-byte varint (up to 16 KiB); longer ones are not read here
        if at + 2 >= len(raw) or raw[at + 2] & 0x80:
            return None, at
        length = (length & 0x7F) | (raw[at + 2] << 7)
        start = at + 3
    end = start + length
    if length > _MAX_FIELD or end > len(raw):
        return None, at
    try:
        return raw[start:end].decode("utf-8"), end
    except UnicodeDecodeError:
        return None, at
