"""``create_redis_client``: the one factory of the Redis clients every shared store uses,
and ``REDIS_FAILURES``, what their calls raise when Redis is down. Each store owns its
client (and closes it); each is built with the pool size its traffic needs
(:mod:`modelgate.boot.stores`).
"""

from __future__ import annotations

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

__all__ = ["REDIS_FAILURES", "create_redis_client"]

#: what a Redis call raises when Redis is down, slow or cut off. RuntimeError included:
#: under uvloop, a command sent on a connection the peer has just reset raises
#: "unable to perform operation on <TCPTransport closed=True>" from redis-py's writer
#: (found by tests/e2e/test_redis_faults.py), not a ConnectionError.
REDIS_FAILURES = (RedisError, OSError, RuntimeError)


def create_redis_client(
    url: str,
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
    max_connections: int = 64,
    pool_timeout_s: float | None = None,
    health_check_interval_s: int = 30,
) -> redis.asyncio.Redis:
    """A client on which no call hangs: every connect and every read has a deadline, and a
    failed command is not retried (the limiter's caller decides what a failure means, and a
    retry would double the worst-case latency of a request).

    At most ``max_connections`` are open; a call that finds them all busy waits up to
    ``pool_timeout_s`` (default: ``read_timeout_s``) for one. (redis-py's default pool
    instead fails at once when full, which under a burst would look like an outage.) The
    worst case of one call is thus pool wait + connect + read.

    A connection idle for ``health_check_interval_s`` is pinged before reuse, so one that a
    firewall dropped silently fails fast instead of on the request.
    """
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=read_timeout_s if pool_timeout_s is None else pool_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=read_timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=health_check_interval_s,
    )
    return redis.asyncio.Redis.from_pool(pool)
