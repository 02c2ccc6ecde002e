"""How a job item's request, response and error are sealed at rest.

With a cipher (the payload keys, ``MODELGATE_PAYLOAD_KEYS``) each of them is stored sealed
with AES-GCM: the JSON column holds ``{"$sealed": {"key": id, "nonce": b64, "data": b64}}``,
bound to the job id, the item and the field (associated data), so a sealed value moved to
another row does not open. Items stored before keys were configured stay readable as they
are; a sealed item needs the key it names.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from modelgate.core.governance.ports import PayloadCipher
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["JobItemSealer"]

_SEALED = "$sealed"


class JobItemSealer:
    """Seals and opens the JSON values of one queue's job items; without a cipher, values
    are stored as they are (and a sealed one cannot be read)."""

    def __init__(self, cipher: PayloadCipher | None) -> None:
        self._cipher = cipher

    def seal(self, value: Any, job_id: str, item: int, field: str) -> Any:
        if self._cipher is None or value is None:
            return value
        key, nonce, data = self._cipher.encrypt(
            orjson.dumps(value), _associated(job_id, item, field)
        )
        return {_SEALED: {"key": key, "nonce": _b64(nonce), "data": _b64(data)}}

    def open(self, value: Any, job_id: str, item: int, field: str) -> Any:
        if not (isinstance(value, dict) and len(value) == 1 and _SEALED in value):
            return value  # stored before keys were configured
        if self._cipher is None:
            raise ModelgateError(
                ErrorKind.FAILED_PRECONDITION,
                "this job's data is sealed: configure MODELGATE_PAYLOAD_KEYS to read it",
            )
        sealed = value[_SEALED]
        try:
            key, nonce, data = sealed["key"], _unb64(sealed["nonce"]), _unb64(sealed["data"])
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ModelgateError(
                ErrorKind.INTERNAL, f"job {job_id} item {item}: malformed sealed {field}"
            ) from exc
        plain = self._cipher.decrypt(key, nonce, data, _associated(job_id, item, field))
        return orjson.loads(plain)


def _associated(job_id: str, item: int, field: str) -> bytes:
    return f"modelgate-job:{job_id}:{item}:{field}".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError("not base64 text")
    return base64.b64decode(text, validate=True)
