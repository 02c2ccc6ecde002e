"""Key material: the prefix a presented key is looked up by, and the digest it is checked with."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.access.keys import hash_key, issue_key, key_digest, key_prefix


def _prefix_by_partition(secret: str) -> str | None:
    """The prefix as first written: everything before the last underscore, checked."""
    if not secret.startswith("mg_live_") or len(secret) != 8 + 12 + 1 + 32:
        return None
    prefix, sep, _ = secret.rpartition("_")
    if not sep or len(prefix) != 8 + 12:
        return None
    return prefix


_KEYISH = st.builds(
    lambda middle, tail: "mg_live_" + middle + tail,
    st.text(alphabet="ab_", min_size=11, max_size=14),
    st.text(alphabet="ab_", min_size=30, max_size=34),
)


@given(st.one_of(_KEYISH, st.text()))
def test_the_prefix_of_any_string_is_what_the_partition_said(secret: str) -> None:
    assert key_prefix(secret) == _prefix_by_partition(secret)


def test_an_issued_key_is_found_by_its_prefix() -> None:
    issued = issue_key()
    assert key_prefix(issued.secret) == issued.prefix


@given(st.text())
def test_the_digest_is_the_stored_hash_before_its_hex(secret: str) -> None:
    assert key_digest(secret) == bytes.fromhex(hash_key(secret))
    assert key_digest(secret) == hashlib.sha256(secret.encode()).digest()
