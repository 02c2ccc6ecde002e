"""In-process storage backends, one file per port.

The backends of the database's ports (audit, deployments, feedback, idempotency, identity,
jobs, payloads, usage) are for tests and single-process experiments: nothing persists.
The shared stores' backends (``MemoryRateLimiter`` in :mod:`.rate_limits`,
``MemoryQuotaCounter`` in :mod:`.quotas`, ``MemoryStrikeStore`` in :mod:`.strikes`,
``MemoryResultStore`` in :mod:`.cache`) serve one process, and are the per-replica
fallback while Redis is down (:mod:`modelgate.limits`).
"""
