"""The stores replicas share, each in memory for one process or in Redis when
``MODELGATE_REDIS_URL`` is set (with a fallback for Redis outages): the rate limiter, the
quota counter, the abuse strike store and the result cache; and where replicas share
their canary windows. Picked from settings for :mod:`modelgate.boot.components`; the
backends are in :mod:`modelgate.storage.memory` and :mod:`modelgate.storage.redis`.
"""

from __future__ import annotations

from modelgate.core.admission.abuse import AbuseGuard, AbusePolicy
from modelgate.core.admission.ports import QuotaCounter, RateLimiter
from modelgate.core.serving.caching import ResultCache
from modelgate.core.serving.ports import ResultStore
from modelgate.core.traffic.ports import CanaryWindows
from modelgate.limits.quotas import FallbackQuotaCounter
from modelgate.limits.resilient import FallbackRateLimiter
from modelgate.limits.strikes import FallbackStrikeStore
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.settings import Settings
from modelgate.storage.memory.quotas import MemoryQuotaCounter
from modelgate.storage.memory.rate_limits import MemoryRateLimiter
from modelgate.storage.memory.strikes import MemoryStrikeStore

__all__ = [
    "build_abuse_guard",
    "build_cache",
    "build_canary_windows",
    "build_limiter",
    "build_quota_counter",
]


def build_limiter(settings: Settings) -> RateLimiter:
    """In memory for one process; Redis (with a fallback for outages) when shared, spent
    from local leases unless ``limit_lease_share`` is 0."""
    if settings.redis_url is None:
        return MemoryRateLimiter()
    from modelgate.storage.redis.client import create_redis_client
    from modelgate.storage.redis.rate_limits import RedisRateLimiter

    timeout = settings.redis_timeout_seconds
    client = create_redis_client(
        settings.redis_url.get_secret_value(), connect_timeout_s=timeout, read_timeout_s=timeout
    )
    prefix = f"{settings.redis_key_prefix}rl:"
    shared: RateLimiter
    if settings.limit_lease_share > 0:
        from modelgate.limits.leases import LeasingRateLimiter
        from modelgate.storage.redis.leases import RedisTokenLeases

        shared = LeasingRateLimiter(
            RedisTokenLeases(client, prefix=prefix),
            share=settings.limit_lease_share,
            lease_s=settings.limit_lease_ms / 1000,
        )
    else:
        shared = RedisRateLimiter(client, prefix=prefix)
    return FallbackRateLimiter(
        shared,
        MemoryRateLimiter(),
        settings.limiter_failure_mode,
        local_share=settings.limiter_local_share,
    )


def build_abuse_guard(settings: Settings, metrics: PrometheusMetrics | None = None) -> AbuseGuard:
    """Abuse throttling; its counts in memory for one process, in Redis (falling back to
    memory while Redis is down) when shared."""
    policy = AbusePolicy(
        window_s=settings.abuse_window_seconds,
        slow_after=settings.abuse_slow_after,
        block_after=settings.abuse_block_after,
        block_s=settings.abuse_block_seconds,
        auth_failures_per_address=settings.abuse_auth_failures_per_ip,
    )
    if settings.redis_url is None:
        return AbuseGuard(MemoryStrikeStore(), policy, observer=metrics)
    from modelgate.storage.redis.client import create_redis_client
    from modelgate.storage.redis.strikes import RedisStrikeStore

    timeout = settings.redis_timeout_seconds
    client = create_redis_client(
        settings.redis_url.get_secret_value(),
        connect_timeout_s=timeout,
        read_timeout_s=timeout,
        max_connections=16,  # only failures and a once-a-second check per subject reach it
    )
    store = RedisStrikeStore(client, prefix=f"{settings.redis_key_prefix}abuse:")
    return AbuseGuard(FallbackStrikeStore(store, MemoryStrikeStore()), policy, observer=metrics)


def build_quota_counter(settings: Settings) -> QuotaCounter:
    """In memory for one process; Redis (with the limiter's failure mode) when shared,
    charged from reserved slices unless ``limit_lease_share`` is 0."""
    if settings.redis_url is None:
        return MemoryQuotaCounter()
    from modelgate.storage.redis.client import create_redis_client
    from modelgate.storage.redis.quotas import RedisQuotaCounter

    timeout = settings.redis_timeout_seconds
    client = create_redis_client(
        settings.redis_url.get_secret_value(), connect_timeout_s=timeout, read_timeout_s=timeout
    )
    shared: QuotaCounter
    if settings.limit_lease_share > 0:
        from modelgate.limits.quota_leases import LeasingQuotaCounter
        from modelgate.storage.redis.quota_leases import RedisQuotaLeases

        shared = LeasingQuotaCounter(
            RedisQuotaLeases(client, prefix=settings.redis_key_prefix),
            share=settings.limit_lease_share,
            lease_s=settings.limit_lease_ms / 1000,
        )
    else:
        shared = RedisQuotaCounter(client, prefix=settings.redis_key_prefix)
    return FallbackQuotaCounter(
        shared,
        MemoryQuotaCounter(),
        settings.limiter_failure_mode,
    )


def build_cache(settings: Settings, metrics: PrometheusMetrics) -> ResultCache | None:
    """The result cache: in this process, or in Redis (a miss while Redis is down) when
    shared; None when ``cache_enabled`` is off."""
    if not settings.cache_enabled:
        return None
    store: ResultStore
    if settings.redis_url is None:
        from modelgate.storage.memory.cache import MemoryResultStore

        store = MemoryResultStore(
            max_entries=settings.cache_max_entries,
            max_bytes=settings.cache_max_mb * 1024 * 1024,
            observer=metrics,
        )
    else:
        from modelgate.storage.redis.cache import RedisResultStore
        from modelgate.storage.redis.client import create_redis_client

        timeout = settings.redis_timeout_seconds
        client = create_redis_client(
            settings.redis_url.get_secret_value(), connect_timeout_s=timeout, read_timeout_s=timeout
        )
        store = RedisResultStore(client, prefix=f"{settings.redis_key_prefix}cache:")
    return ResultCache(store, observer=metrics, max_entry_bytes=settings.cache_max_entry_bytes)


def build_canary_windows(settings: Settings) -> CanaryWindows | None:
    """Where replicas share their canary windows: Redis when shared; None (each replica
    judges its own window) for one process."""
    if settings.redis_url is None:
        return None
    from modelgate.storage.redis.canary_windows import RedisCanaryWindows
    from modelgate.storage.redis.client import create_redis_client

    timeout = settings.redis_timeout_seconds
    client = create_redis_client(
        settings.redis_url.get_secret_value(),
        connect_timeout_s=timeout,
        read_timeout_s=timeout,
        max_connections=4,  # one exchange per canary every refresh
    )
    return RedisCanaryWindows(client, prefix=settings.redis_key_prefix)
