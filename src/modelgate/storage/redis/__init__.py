"""Redis backends: the stores replicas share, one module per port, and the one client
factory (:mod:`.client`) each of them is built with.

- :mod:`.rate_limits`: ``RedisRateLimiter`` (one Lua GCRA script per check);
- :mod:`.quotas`: ``RedisQuotaCounter`` (one Lua script per request);
- :mod:`.strikes`: ``RedisStrikeStore`` (abuse strikes and blocks);
- :mod:`.cache`: ``RedisResultStore`` (cached results, in :mod:`.cache_codec`'s bytes);
- :mod:`.canary_windows`: ``RedisCanaryWindows`` (every replica's canary window);
- :mod:`.node_directory`: ``RedisNodeDirectory`` (nodes' announcements, read by gateways),
  with :mod:`.served_models` (the catalogue of models served recently).

What a request gets while Redis is down is decided in :mod:`modelgate.limits`, not here.
Nothing imports this package unless ``MODELGATE_REDIS_URL`` is set (:mod:`modelgate.boot`).
"""
