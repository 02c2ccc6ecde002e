"""A Redis key prefix of one benchmark run (``--redis URL``): unique, so the run shares no
rate-limit, quota or abuse counter with anything else in that Redis, and removed at the
end."""

from __future__ import annotations

import secrets

__all__ = ["remove_prefix", "unique_prefix"]


def unique_prefix() -> str:
    """A fresh prefix (hex only: nothing in it is a glob character)."""
    return f"modelgate-bench-{secrets.token_hex(6)}:"


def remove_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many."""
    import redis

    if not prefix.startswith("modelgate-bench-"):  # never a prefix this module did not make
        raise ValueError(f"not a benchmark prefix: {prefix!r}")
    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    try:
        removed, batch = 0, []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(client.delete(*batch))
                batch = []
        if batch:
            removed += int(client.delete(*batch))
        return removed
    finally:
        client.close()
