"""Admission: what a request must fit before the model runs, and what it used after.

The admission checks (``admission``), rate limits and their port (``limits``), quotas
(``quotas``), abuse throttling (``abuse``), usage metering and cost (``metering``,
``usage``, ``ports``), and the idempotency keys of the admin API (``idempotency``: whether
a side-effecting request runs, or answers again what it answered before).
"""
