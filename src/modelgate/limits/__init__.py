"""The admission logic the limit stores share, whatever holds the counts.

- :mod:`.gcra`: the GCRA arithmetic every rate limiter uses (in memory and in Redis's Lua);
- :mod:`.resilient`: ``FallbackRateLimiter``, the policy for an unreachable store (fail
  open to a local limiter, or fail closed);
- :mod:`.quotas`: ``FallbackQuotaCounter``, the same policy for quota counters;
- :mod:`.strikes`: ``FallbackStrikeStore``, counting abuse strikes locally while the shared
  store is down;
- :mod:`.outage`: when a failed shared store is asked again;
- :mod:`.leases`: ``LeasingRateLimiter``, spending tokens leased from the shared bucket
  instead of one round trip per request, within a stated error bound;
- :mod:`.quota_leases`: ``LeasingQuotaCounter``, charging quotas from reserved slices.

The backends themselves are in :mod:`modelgate.storage.memory` and
:mod:`modelgate.storage.redis`. This package imports nothing on its own.
"""
