"""What text the tables accept, checked before a statement is sent.

Both backends must answer the same way, and they differ on their own: PostgreSQL refuses
NUL characters and over-long ``VARCHAR`` values, SQLite stores both. So the SQL stores
refuse them first, with INVALID_ARGUMENT, on every backend. Everything else in Unicode
(quotes, ``'; DROP TABLE ...``, emoji, right-to-left marks) is stored and read back exactly:
values only ever travel as bound parameters.
"""

from __future__ import annotations

from datetime import datetime

from modelgate.errors import invalid

__all__ = ["checked_text", "checked_time", "storable"]


def storable(value: str, max_length: int) -> bool:
    """Could a column of ``max_length`` characters hold ``value``?"""
    if len(value) > max_length or "\x00" in value:
        return False
    try:
        value.encode("utf-8")  # lone surrogates have no UTF-8 form
    except UnicodeEncodeError:
        return False
    return True


def checked_text(value: str, field: str, max_length: int) -> str:
    """``value`` itself, or INVALID_ARGUMENT naming ``field`` when it cannot be stored."""
    if len(value) > max_length:
        raise invalid(f"{field} is longer than {max_length} characters")
    if not storable(value, max_length):
        raise invalid(f"{field} contains a NUL character or invalid Unicode")
    return value


def checked_time(value: datetime, field: str) -> datetime:
    """``value`` itself, or INVALID_ARGUMENT when it is naive (no time zone)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise invalid(f"{field} must be a timezone-aware datetime")
    return value
