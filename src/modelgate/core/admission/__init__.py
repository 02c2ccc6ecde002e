"""Admission: what a request must fit before the model runs, and what it used after.

The admission checks (``admission``), quotas (``quotas``), abuse throttling (``abuse``),
usage metering and cost (``metering``, ``usage``), the idempotency keys of the admin API
(``idempotency``: whether a side-effecting request runs, or answers again what it answered
before), and the ports of the rate limiter, the quota counters, the strike store, the usage
sink and idempotency (``ports``).
"""
