"""AES-GCM sealing of logged payloads: round trip, rotation without losing old rows, and
refusal of anything altered, moved or sealed with a key that is not configured."""

from __future__ import annotations

import base64
import os

import pytest

from modelgate.core.governance.payloads import associated_data
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.crypto import AesGcmCipher, decode_key

K1, K2 = os.urandom(32), os.urandom(32)


def test_a_sealed_payload_opens_with_its_row_and_tenant() -> None:
    cipher = AesGcmCipher({"k1": K1})
    aad = associated_data("pl_1", "ten_a")
    key, nonce, sealed = cipher.encrypt(b'{"text": "secret"}', aad)
    assert key == "k1" and len(nonce) == 12 and b"secret" not in sealed
    assert cipher.decrypt(key, nonce, sealed, aad) == b'{"text": "secret"}'
    # a fresh nonce each time: the same plaintext never gives the same ciphertext
    assert cipher.encrypt(b'{"text": "secret"}', aad)[1:] != (nonce, sealed)


@pytest.mark.parametrize("change", ["byte", "nonce", "row", "tenant"])
def test_altered_or_moved_payloads_fail_authentication(change: str) -> None:
    cipher = AesGcmCipher({"k1": K1})
    key, nonce, sealed = cipher.encrypt(b"payload", associated_data("pl_1", "ten_a"))
    aad = associated_data("pl_1", "ten_a")
    if change == "byte":
        sealed = bytes([sealed[0] ^ 1]) + sealed[1:]
    elif change == "nonce":
        nonce = os.urandom(12)
    elif change == "row":
        aad = associated_data("pl_2", "ten_a")
    else:
        aad = associated_data("pl_1", "ten_b")
    with pytest.raises(ModelgateError) as caught:
        cipher.decrypt(key, nonce, sealed, aad)
    assert caught.value.kind is ErrorKind.INTERNAL


def test_rotation_keeps_old_rows_readable_while_their_key_is_configured() -> None:
    aad = associated_data("pl_1", "ten_a")
    old = AesGcmCipher({"k1": K1})
    sealed_old = old.encrypt(b"before rotation", aad)
    rotated = AesGcmCipher({"k1": K1, "k2": K2}, active="k2")
    sealed_new = rotated.encrypt(b"after rotation", aad)
    assert sealed_new[0] == "k2"
    assert rotated.decrypt(*sealed_old, aad) == b"before rotation"
    assert rotated.decrypt(*sealed_new, aad) == b"after rotation"
    # once k1 is gone, its rows cannot be read, and say why
    without_k1 = AesGcmCipher({"k2": K2})
    with pytest.raises(ModelgateError) as caught:
        without_k1.decrypt(*sealed_old, aad)
    assert caught.value.kind is ErrorKind.FAILED_PRECONDITION
    assert "'k1'" in caught.value.message


def test_keys_from_settings_are_checked() -> None:
    encoded = base64.b64encode(K1).decode()
    assert AesGcmCipher.from_settings({"a": encoded}, None).active_key == "a"
    assert decode_key("a", base64.b64encode(b"x" * 16).decode()) == b"x" * 16
    with pytest.raises(ValueError, match="base64"):
        decode_key("a", "not base64!")
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        decode_key("a", base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="name the active one"):
        AesGcmCipher({"a": K1, "b": K2})
    with pytest.raises(ValueError, match="not among the keys"):
        AesGcmCipher({"a": K1}, active="b")
    with pytest.raises(ValueError, match="at least one key"):
        AesGcmCipher({})


def test_settings_configure_payload_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelgate.boot.state import build_payload_crypto
    from modelgate.settings import Settings, load_settings

    encoded = base64.b64encode(K1).decode()
    monkeypatch.setenv("MODELGATE_PAYLOAD_KEYS", f'{{"2026-01": "{encoded}"}}')
    monkeypatch.setenv("MODELGATE_PAYLOAD_PSEUDONYM_KEY", "p" * 32)
    cipher, pseudonymize = build_payload_crypto(load_settings())
    assert cipher is not None and cipher.active_key == "2026-01"
    assert pseudonymize is not None and len(pseudonymize("alice")) == 64
    # off by default: neither a cipher nor pseudonyms
    monkeypatch.delenv("MODELGATE_PAYLOAD_KEYS")
    monkeypatch.delenv("MODELGATE_PAYLOAD_PSEUDONYM_KEY")
    assert build_payload_crypto(Settings()) == (None, None)
    with pytest.raises(ValueError, match="needs MODELGATE_PAYLOAD_PSEUDONYM_KEY"):
        build_payload_crypto(Settings(payload_keys={"k": encoded}))
    with pytest.raises(ValueError, match="at least 16 bytes"):
        build_payload_crypto(Settings(payload_keys={"k": encoded}, payload_pseudonym_key="x"))
    with pytest.raises(ValueError, match="name the active one"):
        build_payload_crypto(
            Settings(payload_keys={"a": encoded, "b": encoded}, payload_pseudonym_key="p" * 16)
        )
