"""Rate-limiter backends behind the :class:`~modelgate.core.admission.limits.RateLimiter` port.

One module per backend, all sharing the GCRA arithmetic of :mod:`.gcra`:

- :mod:`.memory`: ``MemoryRateLimiter``, in-process (embedded mode, and the per-replica cap
  while Redis is down);
- :mod:`.redis`: ``RedisRateLimiter``, one Lua script per check, so the limit holds across
  replicas; imports ``redis`` only when chosen;
- :mod:`.resilient`: ``FallbackRateLimiter``, the policy for an unreachable store (fail
  open to a local limiter, or fail closed).

This package imports nothing on its own: pick the module of the backend you use.
"""
