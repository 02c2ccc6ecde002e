"""The learning loop's service (docs/learning.md), built from settings: the model
repository it writes versions into, the interpreter trainers run with, and what tells it
that a model's drift alert fires. A gateway has no repository of its own: no loop."""

from __future__ import annotations

import sys

from modelgate.boot.components import Components
from modelgate.core.monitoring.alerts import AlertEvaluator
from modelgate.fairness.fairlearn_metrics import FairlearnMetrics
from modelgate.learning.runs import LearningService
from modelgate.settings import Settings

__all__ = ["build_learning"]

#: the alert rules' metrics that mean a model drifts (core/monitoring/alerts.py)
_DRIFT_METRICS = frozenset({"feature_drift", "prediction_drift", "accuracy_drop"})


def build_learning(settings: Settings, components: Components) -> LearningService | None:
    if settings.role == "gateway" or components.deployments is None:
        return None
    state = components.state
    alerts = components.alerts

    def drifting(model: str) -> bool:
        return _drifting(alerts, model)

    return LearningService(
        repository=settings.model_repository.resolve(),
        registry=components.registry,
        feedback=state.feedback_service,
        privacy=state.payload_service,
        deployments=components.deployments,
        audit=state.audit,
        fairness=FairlearnMetrics(),  # imports Fairlearn on the first evaluation only
        python=settings.learning_python or sys.executable,
        trigger_interval_s=settings.learning_trigger_seconds,
        retention_days=settings.learning_retention_days,
        drifting=drifting if alerts is not None else None,
    )


def _drifting(alerts: AlertEvaluator | None, model: str) -> bool:
    if alerts is None:
        return False
    drift_rules = {rule.name for rule in alerts.rules if rule.metric in _DRIFT_METRICS}
    return any(
        name in drift_rules and (subject == model or subject.startswith(f"{model}/"))
        for name, subject in alerts.firing
    )
