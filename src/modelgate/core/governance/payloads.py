"""Logged payloads: the stored form of the rows consented inferences leave behind (the
rows and the ports that keep and seal them are :mod:`modelgate.core.governance.ports`).

A row holds, in clear, who and what (tenant, key id, model, version, the subject's
pseudonym, purpose, creation and expiry times, what redaction took out) and, sealed with
AES-GCM, the inputs and outputs. The associated data binds the ciphertext to its row id
and tenant, so a sealed payload moved to another row, or another tenant, fails to open.

The logging itself (the listener on the request path and its background writer) is
:mod:`modelgate.core.governance.payload_logger`; the use cases around the rows (consent settings, a
data subject's export and erasure, datasets, key rotation) are
:mod:`modelgate.core.governance.privacy`. docs/privacy.md is the user's view of all of it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelgate.core.governance.ports import PayloadCipher, PayloadRecord
from modelgate.core.governance.redaction import redact_text
from modelgate.core.serving.tensors import Tensor

__all__ = [
    "MAX_PURPOSE_LENGTH",
    "MAX_SUBJECT_LENGTH",
    "associated_data",
    "exported",
    "open_payload",
    "payload_document",
    "payload_size",
    "seal_document",
]

#: the longest data-subject id taken (longer ones are not a subject id: not logged)
MAX_SUBJECT_LENGTH = 256
#: the longest purpose text
MAX_PURPOSE_LENGTH = 256


def associated_data(record_id: str, tenant_id: str) -> bytes:
    """What a row's ciphertext is bound to: its id and tenant."""
    return b"modelgate-payload-v1\x00" + record_id.encode() + b"\x00" + tenant_id.encode()


def payload_size(tensors: Sequence[Tensor]) -> int:
    """About how many bytes the tensors hold (text: its bytes; numbers: their arrays)."""
    size = 0
    for tensor in tensors:
        if tensor.datatype == "BYTES":
            size += sum(len(v) for v in tensor.data.reshape(-1).tolist())
        else:
            size += tensor.data.nbytes
    return size


def payload_document(
    request_id: str | None, inputs: Sequence[Tensor], outputs: Sequence[Tensor]
) -> tuple[dict[str, Any], Counter[str]]:
    """The stored form of one inference, text redacted, and what redaction took out.

    Text tensors (BYTES) are redacted element by element; an element that is not UTF-8
    cannot be read, so it cannot be redacted either: it is replaced by ``[BINARY]``.
    Numbers are stored as they are; non-finite floats as "NaN", "Infinity", "-Infinity"
    (as protobuf's JSON mapping writes them)."""
    found: Counter[str] = Counter()
    document = {
        "request_id": request_id,
        "inputs": [_tensor(t, found) for t in inputs],
        "outputs": [_tensor(t, found) for t in outputs],
    }
    if request_id:
        redacted = redact_text(request_id)
        document["request_id"] = redacted.text
        found.update(redacted.found)
    return document, found


def _tensor(tensor: Tensor, found: Counter[str]) -> dict[str, Any]:
    data = tensor.data
    flat = data.reshape(-1)
    values: list[Any]
    if tensor.datatype == "BYTES":
        values = [_text(v, found) for v in flat.tolist()]
    elif data.dtype.kind == "f" and not bool(np.isfinite(data).all()):
        values = [_number(v) for v in flat.tolist()]
    else:
        values = flat.tolist()
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(data.shape),
        "data": values,
    }


def _text(value: Any, found: Counter[str]) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            found["binary"] += 1
            return "[BINARY]"
    redacted = redact_text(str(value))
    found.update(redacted.found)
    return redacted.text


def _number(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def seal_document(
    cipher: PayloadCipher, record_id: str, tenant_id: str, document: Mapping[str, Any]
) -> tuple[str, bytes, bytes]:
    plaintext = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return cipher.encrypt(plaintext.encode("utf-8"), associated_data(record_id, tenant_id))


def open_payload(cipher: PayloadCipher, record: PayloadRecord) -> dict[str, Any]:
    """The record's decrypted document (``request_id``, ``inputs``, ``outputs``)."""
    plaintext = cipher.decrypt(
        record.cipher_key,
        record.nonce,
        record.ciphertext,
        associated_data(record.id, record.tenant_id),
    )
    document: dict[str, Any] = json.loads(plaintext)
    return document


def exported(record: PayloadRecord, document: Mapping[str, Any]) -> dict[str, Any]:
    """A record as exports show it: clear fields and the opened payload."""
    return {
        "id": record.id,
        "tenant_id": record.tenant_id,
        "key_id": record.key_id,
        "model": record.model,
        "version": record.version,
        "subject": record.subject,
        "purpose": record.purpose,
        "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat(),
        "redactions": dict(record.redactions),
        "request_id": document.get("request_id"),
        "inputs": document.get("inputs", []),
        "outputs": document.get("outputs", []),
    }
