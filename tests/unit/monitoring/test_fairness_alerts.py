"""The built-in fairness alert rules: the defaults name the fairness metrics and build with
or without the background audit, and a fairness rule fires on the worst judged attribute of
a served version, never on a version no longer served or an attribute too small to judge."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelgate.boot.alerts import build_alerts
from modelgate.core.monitoring.alerts import DEFAULT_RULES, AlertEvaluator, AlertRule
from modelgate.core.monitoring.fairness import AttributeAudit, FairnessReport, VersionAudit
from modelgate.core.monitoring.ports import GroupFigures
from modelgate.fairness.watch import FairnessAlertSource
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _attribute(name: str, dpd: float | None, rows: int = 300) -> AttributeAudit:
    groups = [GroupFigures("0", rows // 2, True), GroupFigures("1", rows // 2, dpd is not None)]
    status: Any = "ok" if dpd is not None else "insufficient data"
    return AttributeAudit(name, status, rows, groups, dpd, None, None, None)


class _Watch:
    """What the alert source reads of a FairnessWatch: reports, and the served versions."""

    def __init__(self, served: set[str], *versions: VersionAudit) -> None:
        report = FairnessReport("risk", NOW, None, None, 30, 50_000, False, list(versions))
        self.reports = {"risk": (report, NOW)}
        self.served = served

    def loaded_versions(self, model: str) -> set[str]:
        return self.served


def test_the_default_rules_include_fairness_and_build_without_the_audit() -> None:
    metrics = {rule.metric for rule in DEFAULT_RULES}
    assert {"demographic_parity_difference", "equalized_odds_difference"} <= metrics
    evaluator, _ = build_alerts(Settings(), PrometheusMetrics())
    assert evaluator is not None
    assert evaluator.evaluate() == []  # no audit yet: no data, nothing fires


def test_a_fairness_rule_fires_on_the_worst_judged_attribute_of_a_served_version() -> None:
    watch = _Watch(
        {"2"},
        VersionAudit("1", 300, 0, [_attribute("age_band", 0.9)]),  # retired: not read
        VersionAudit("2", 300, 0, [_attribute("age_band", 0.15), _attribute("region", None)]),
    )
    source = FairnessAlertSource(watch)  # type: ignore[arg-type]
    [reading] = source.read("demographic_parity_difference", 300).values()
    assert (reading.value, reading.count) == (0.15, 300)
    assert source.read("equalized_odds_difference", 300) == {}  # no judged value
    sent: list[Any] = []
    rule = AlertRule(
        name="Gap", metric="demographic_parity_difference", threshold=0.1, min_requests=100
    )
    evaluator = AlertEvaluator([rule], [source], sent.append, clock=lambda: 0.0)
    [event] = evaluator.evaluate()
    assert (event.rule.name, event.subject, event.state, event.value) == (
        "Gap",
        "risk",
        "firing",
        0.15,
    )
    assert FairnessAlertSource(None).read("demographic_parity_difference", 300) == {}
