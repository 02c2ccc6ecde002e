"""Admission: what a request must fit before the model runs, and what it used after.

The admission checks (``admission``), rate limits and their port (``limits``), quotas
(``quotas``), abuse throttling (``abuse``), and usage metering and cost (``metering``,
``usage``, ``ports``).
"""
