"""PII redaction of text before it is stored, and keyed pseudonyms of user ids.

:func:`redact_text` replaces what it recognises with a placeholder and counts it, so the
logged copy says what was taken out::

    email    [EMAIL]   local@domain.tld (Unicode letters too)
    iban     [IBAN]    2 letters, 2 check digits, 11-30 letters or digits (spaces between
                       groups allowed), kept only when the ISO 13616 mod-97 check holds
    card     [CARD]    13-19 digits, single spaces or dashes between groups allowed, kept
                       only when the Luhn check holds
    ip       [IP]      IPv4 dotted quads, IPv6 (checked by ``ipaddress``)
    phone    [PHONE]   "+" and 8-15 digits; (555) 123-4567 / 555-123-4567; national numbers
                       starting with 0 of 9-11 digits in groups

The passes run in that order (IPv6 right after e-mail, as it may hold no decimal digit):
an e-mail address holding digits is one e-mail, an IBAN is not also a card. Every pattern
starts only where a run of its characters starts (a look-behind), so a pass is linear in
the text, whatever the text.

Names are not redacted: no well-kept library finds them offline (see docs/privacy.md).
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "PLACEHOLDERS",
    "Redacted",
    "iban_valid",
    "luhn_valid",
    "pseudonym",
    "redact_text",
]

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "card": "[CARD]",
    "ip": "[IP]",
    "phone": "[PHONE]",
}


@dataclass(frozen=True, slots=True)
class Redacted:
    """The text with its PII replaced, and how many of each kind were found."""

    text: str
    found: Counter[str] = field(default_factory=Counter)


def pseudonym(key: bytes, subject: str) -> str:
    """The keyed pseudonym of a data-subject id: HMAC-SHA256, hex. Without the key, ids
    cannot be recovered or guessed from it; with it, the same id always gives the same
    pseudonym, so a subject's rows can be found for export and erasure."""
    return hmac.new(key, b"modelgate-subject\x00" + subject.encode(), hashlib.sha256).hexdigest()


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of digits."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616: 15-34 letters and digits, country letters, check digits, mod 97 == 1."""
    iban = candidate.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34 or not iban.isascii() or not iban.isalnum():
        return False
    if not (iban[:2].isalpha() and iban[2:4].isdigit()):
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[\w-]+\.)+[^\W\d_]{2,}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")
_DIGIT_RUN = re.compile(r"(?<![\d])\d(?:[ -]?\d)*")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?![\w:]|\.\d)"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
# Phone numbers, each form with the digit counts it may have.
_PHONES = (
    # international: "+", country code, groups
    (re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?!\d)"), 8, 15),
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567
    (re.compile(r"(?<![\w(])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w)"), 10, 10),
    # national, trunk prefix 0: 030 1234567, 06 12 34 56 78, 0612345678 (one separator
    # throughout, so that a date and a time, 05.03.2025 10:30, are not one number)
    (re.compile(r"(?<![\w.])0\d{1,4}([ .-]?)\d{2,8}(?:\1\d{2,4}){0,3}(?![\w]|[.-]\d)"), 9, 11),
)


def redact_text(text: str) -> Redacted:
    """``text`` with e-mails, IBANs, card numbers, IP addresses and phone numbers replaced
    by their placeholders (see the module docstring)."""
    found: Counter[str] = Counter()
    if "@" in text:
        text = _sub(_EMAIL, text, found, lambda m: "email")
    if "::" in text or text.count(":") >= 2:  # before the digits: an IPv6 may hold none
        text = _sub(_IPV6, text, found, _ipv6)
    if any(c.isdigit() for c in text):
        text = _IBAN.sub(lambda m: _ibans_in(m.group(), found), text)
        text = _DIGIT_RUN.sub(lambda m: _cards_in(m.group(), found), text)
        if "." in text:
            text = _sub(_IPV4, text, found, lambda m: "ip")
        for pattern, least, most in _PHONES:
            text = _sub(pattern, text, found, _phone_of(least, most))
    return Redacted(text, found)


def _sub(
    pattern: re.Pattern[str],
    text: str,
    found: Counter[str],
    kind_of: Callable[[re.Match[str]], str | None],
) -> str:
    def replace(match: re.Match[str]) -> str:
        kind = kind_of(match)
        if kind is None:
            return match.group()
        found[kind] += 1
        return PLACEHOLDERS[kind]

    return pattern.sub(replace, text)


def _ibans_in(value: str, found: Counter[str]) -> str:
    # The pattern is greedy and may have run into the words after an IBAN written in
    # groups ("DE89 3704 ... 00 AND"): the longest prefix ending at a group that checks.
    ends = [len(value)] + [i for i in range(len(value) - 1, 0, -1) if value[i] == " "]
    for end in ends:
        if iban_valid(value[:end]):
            found["iban"] += 1
            return PLACEHOLDERS["iban"] + value[end:]
    return value


def _ipv6(match: re.Match[str]) -> str | None:
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return None
    return "ip"


def _phone_of(least: int, most: int) -> Callable[[re.Match[str]], str | None]:
    def kind(match: re.Match[str]) -> str | None:
        digits = sum(c.isdigit() for c in match.group())
        return "phone" if least <= digits <= most else None

    return kind


def _cards_in(run: str, found: Counter[str]) -> str:
    """Card numbers in a run of digits (with single spaces or dashes): windows of 13-19
    digits that start and end at group boundaries and pass the Luhn check, longest first,
    left to right. A run of digits with no separator is one group: a 25-digit id holds no
    card."""
    digits = [i for i, c in enumerate(run) if c.isdigit()]
    if len(digits) < 13:
        return run
    numerals = "".join(run[i] for i in digits)
    starts = [k for k, i in enumerate(digits) if k == 0 or digits[k - 1] != i - 1]
    ends = [k for k, i in enumerate(digits) if k == len(digits) - 1 or digits[k + 1] != i + 1]
    out: list[str] = []
    copied = 0  # index into run up to which text was copied
    next_digit = 0
    for s in starts:
        if s < next_digit:
            continue
        # the group ends 13 to 19 digits from here, longest first
        first, last = bisect.bisect_left(ends, s + 12), bisect.bisect_right(ends, s + 18)
        for e in reversed(ends[first:last]):
            if luhn_valid(numerals[s : e + 1]):
                out.append(run[copied : digits[s]])
                out.append(PLACEHOLDERS["card"])
                copied = digits[e] + 1
                next_digit = e + 1
                found["card"] += 1
                break
    if not out:
        return run
    out.append(run[copied:])
    return "".join(out)
