"""PII redaction before payloads are stored: what it catches (always), what it leaves alone
(text without PII, numbers that fail their checksums), and keyed pseudonyms."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.governance.redaction import iban_valid, luhn_valid, pseudonym, redact_text

# Text with no PII in it: words and short numbers (no leading zero), never two numbers in a
# row, so no run of digits can form a card, a phone number or an address.
_WORD = st.text(alphabet=string.ascii_letters + "éßж", min_size=1, max_size=12)
_NUMBER = st.integers(min_value=1, max_value=999).map(str)
_PUNCT = st.sampled_from(["", ",", ".", "!", "?", ";", ":"])


@st.composite
def plain_text(draw: st.DrawFn) -> str:
    words = []
    for _ in range(draw(st.integers(min_value=0, max_value=30))):
        words.append(draw(_WORD) + draw(_PUNCT))
        if draw(st.booleans()):
            words.append(draw(_NUMBER) + " " + draw(_WORD))
    return " ".join(words)


# Surroundings of a PII value: no digits (a neighbouring number could join it).
_AROUND = st.text(alphabet=string.ascii_letters + " ,;!?'\"()\n\t", max_size=30)


def _with_check_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError("some check digit always fits")


@st.composite
def card_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A Luhn-valid number of 13-19 digits, as written (grouped or not), and its digits."""
    length = draw(st.integers(min_value=13, max_value=19))
    body = draw(st.text(alphabet=string.digits, min_size=length - 1, max_size=length - 1))
    digits = _with_check_digit(body)
    separator = draw(st.sampled_from(["", " ", "-"]))
    written = separator.join(digits[i : i + 4] for i in range(0, len(digits), 4))
    return written, digits


@st.composite
def ibans(draw: st.DrawFn) -> str:
    """A valid IBAN (random country letters and BBAN, real check digits), maybe grouped."""
    country = draw(st.text(alphabet=string.ascii_uppercase, min_size=2, max_size=2))
    bban = draw(st.text(alphabet=string.ascii_uppercase + string.digits, min_size=11, max_size=30))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    iban = f"{country}{check:02d}{bban}"
    if draw(st.booleans()):
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


@given(plain_text())
def test_text_without_pii_is_unchanged(text: str) -> None:
    redacted = redact_text(text)
    assert redacted.text == text
    assert not redacted.found


@given(_AROUND, card_numbers(), _AROUND)
def test_luhn_valid_card_numbers_are_always_redacted(
    before: str, card: tuple[str, str], after: str
) -> None:
    written, digits = card
    redacted = redact_text(f"{before} {written} {after}")
    assert written not in redacted.text
    assert digits not in redacted.text.replace(" ", "").replace("-", "")
    assert redacted.found["card"] == 1
    assert "[CARD]" in redacted.text


@given(st.text(alphabet=string.digits, min_size=15, max_size=15), st.sampled_from(" -"))
def test_numbers_that_fail_the_luhn_check_are_kept(body: str, separator: str) -> None:
    valid = _with_check_digit(body)
    wrong = valid[:-1] + str((int(valid[-1]) + 1) % 10)
    written = separator.join(wrong[i : i + 4] for i in range(0, 16, 4))
    if wrong.startswith("0"):  # could be read as a national phone number's prefix
        written = "1" + written[1:]
        if luhn_valid(written.replace(separator, "")):
            return
    assert redact_text(f"order {written} shipped").text == f"order {written} shipped"


@given(_AROUND, ibans(), _AROUND)
def test_valid_ibans_are_always_redacted(before: str, iban: str, after: str) -> None:
    redacted = redact_text(f"{before} {iban} {after}")
    assert iban not in redacted.text
    assert redacted.found["iban"] == 1


@given(
    st.from_regex(
        r"[a-z0-9._%+-]{1,20}@[a-z0-9-]{1,15}(\.[a-z0-9-]{1,10})*\.[a-z]{2,6}", fullmatch=True
    )
)
def test_email_addresses_are_always_redacted(email: str) -> None:
    redacted = redact_text(f"write to {email} today")
    assert email not in redacted.text
    assert redacted.text == "write to [EMAIL] today"


@given(st.ip_addresses())
def test_ip_addresses_are_always_redacted(address: object) -> None:
    text = f"from {address} at noon"
    redacted = redact_text(text)
    assert str(address) not in redacted.text
    assert redacted.found["ip"] == 1


@given(st.text(max_size=200))
def test_redaction_is_idempotent(text: str) -> None:
    once = redact_text(text).text
    assert redact_text(once).text == once


@pytest.mark.parametrize(
    ("text", "expected", "kinds"),
    [
        ("mail alice.smith+x@example.co.uk now", "mail [EMAIL] now", {"email": 1}),
        ("Ünïcode jürgen@bücher.de", "Ünïcode [EMAIL]", {"email": 1}),
        ("card 4111 1111 1111 1111, exp 12/30", "card [CARD], exp 12/30", {"card": 1}),
        ("two: 4111-1111-1111-1111 and 5500005555555559", "two: [CARD] and [CARD]", {"card": 2}),
        ("iban DE89 3704 0044 0532 0130 00 AND MORE", "iban [IBAN] AND MORE", {"iban": 1}),
        ("GB82WEST12345698765432.", "[IBAN].", {"iban": 1}),
        ("DE00 3704 0044 0532 0130 00", "DE00 3704 0044 0532 0130 00", {}),  # bad check
        ("host 192.168.0.1, v6 2001:db8::1", "host [IP], v6 [IP]", {"ip": 2}),
        ("mapped ::ffff:10.0.0.1.", "mapped [IP].", {"ip": 1}),
        ("call +1 555 123 4567 now", "call [PHONE] now", {"phone": 1}),
        ("(555) 123-4567 or 555.123.4567", "[PHONE] or [PHONE]", {"phone": 2}),
        ("06 12 34 56 78, 030 1234567", "[PHONE], [PHONE]", {"phone": 2}),
        ("+33 6 12 34 56 78", "[PHONE]", {"phone": 1}),
        # not PII: dates, times, versions, long ids, MAC addresses, amounts
        ("on 05.03.2025 10:30 or 2025-03-04", "on 05.03.2025 10:30 or 2025-03-04", {}),
        ("v1.2.3 at 12:30:45", "v1.2.3 at 12:30:45", {}),
        ("id 1234567890123456789012345", "id 1234567890123456789012345", {}),
        ("mac 00:1A:2B:3C:4D:5E", "mac 00:1A:2B:3C:4D:5E", {}),
        ("total 1,234.56 EUR", "total 1,234.56 EUR", {}),
    ],
)
def test_examples(text: str, expected: str, kinds: dict[str, int]) -> None:
    redacted = redact_text(text)
    assert redacted.text == expected
    assert dict(redacted.found) == kinds


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00")
    assert iban_valid("gb82west12345698765432")
    assert not iban_valid("DE88 3704 0044 0532 0130 00")
    assert not iban_valid("DE89")


def test_redaction_stays_linear_on_hostile_text() -> None:
    # runs that almost match (a long local part with no '@' after it, long digit runs,
    # colons) must not make a pass quadratic
    hostile = "a" * 100_000 + "@" + "1 " * 20_000 + ":" * 20_000 + "0." * 20_000
    assert redact_text(hostile).text.startswith("a" * 1000)


def test_pseudonyms_are_keyed_and_stable() -> None:
    key = b"k" * 32
    assert pseudonym(key, "alice") == pseudonym(key, "alice")
    assert pseudonym(key, "alice") != pseudonym(key, "bob")
    assert pseudonym(key, "alice") != pseudonym(b"other-key-" * 3, "alice")
    assert len(pseudonym(key, "alice")) == 64 and "alice" not in pseudonym(key, "alice")
