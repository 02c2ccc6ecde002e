"""Adapters of fairness audits (:mod:`modelgate.core.monitoring.fairness`): the metrics,
computed with Fairlearn, imported only when an audit runs."""
