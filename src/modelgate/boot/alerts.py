"""Who hears of what from settings: the quota webhook and the quota alerts' sink, the
built-in alert rules (metrics, drift, concept drift, fairness) with their own webhook, and
the background fairness audit behind the fairness gauges and alerts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from modelgate.boot.state import State
from modelgate.core.admission.quotas import QuotaAlert
from modelgate.core.monitoring.alerts import AlertEvaluator
from modelgate.core.monitoring.concept import ConceptAlertSource, ConceptMonitor
from modelgate.core.monitoring.fairness import FairnessAuditor
from modelgate.core.monitoring.monitor import DriftAlertSource, Monitor
from modelgate.core.monitoring.ports import AlertSource
from modelgate.core.serving.catalog import ModelCatalog
from modelgate.fairness.fairlearn_metrics import FairlearnMetrics
from modelgate.fairness.watch import FairnessAlertSource, FairnessWatch
from modelgate.notify.webhook import WebhookSender
from modelgate.observability.alerting import MetricsAlertSource, alert_sink, read_alert_rules
from modelgate.observability.fairness_metrics import FairnessCollector
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.settings import Settings

__all__ = ["build_alerts", "build_fairness", "build_webhook", "quota_alert_sink"]

log = logging.getLogger("modelgate")


def build_webhook(settings: Settings) -> WebhookSender | None:
    if settings.quota_webhook_url is None:
        return None
    return WebhookSender(
        settings.quota_webhook_url,
        secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        timeout_s=settings.webhook_timeout_seconds,
    )


def quota_alert_sink(webhook: WebhookSender | None) -> Callable[[QuotaAlert], None]:
    """Log each quota alert, and POST it to the webhook when one is configured."""

    def alert(event: QuotaAlert) -> None:
        percent = round(event.threshold * 100)
        log.warning(
            "tenant %s has used %d%% of its %s per %s quota (%d of %d)",
            event.tenant_id, percent, event.unit, event.period, event.used, event.limit,
        )  # fmt: skip
        if webhook is not None:
            payload = {
                "type": "quota.threshold",
                "tenant_id": event.tenant_id,
                "quota": f"{event.unit}_per_{event.period}",
                "period_start": event.period_start.isoformat(),
                "limit": event.limit,
                "used": event.used,
                "threshold_percent": percent,
            }
            webhook.send("quota.threshold", payload)

    return alert


def build_alerts(
    settings: Settings,
    metrics: PrometheusMetrics,
    monitor: Monitor | None = None,
    concept: ConceptMonitor | None = None,
    fairness: FairnessWatch | None = None,
) -> tuple[AlertEvaluator | None, WebhookSender | None]:
    """The built-in alerts (None when there are no rules) and their webhook, if any; with
    ``monitor``, rules may also use its drift metrics. Fairness metrics are always known
    (the default rules name them); without the background audit they have no readings."""
    rules = read_alert_rules(settings.alert_rules)
    if not rules:
        return None, None
    webhook = None
    if settings.alert_webhook_url is not None:
        webhook = WebhookSender(
            settings.alert_webhook_url,
            secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
            timeout_s=settings.webhook_timeout_seconds,
        )
    interval = settings.alert_interval_seconds
    retention = max(rule.window_seconds for rule in rules) + 2 * interval
    sources: list[AlertSource] = [MetricsAlertSource(metrics, retention_s=retention)]
    if monitor is not None:
        sources.append(DriftAlertSource(monitor))
    if concept is not None:
        sources.append(ConceptAlertSource(concept))
    sources.append(FairnessAlertSource(fairness))
    evaluator = AlertEvaluator(rules, sources, alert_sink(webhook), interval_s=interval)
    return evaluator, webhook


def build_fairness(
    settings: Settings, state: State, catalog: ModelCatalog, metrics: PrometheusMetrics
) -> tuple[FairnessAuditor, FairnessWatch | None]:
    """The fairness auditor canary gates use, and the background audit (None when
    ``fairness_audit_interval_seconds`` is 0) with its gauges registered."""
    auditor = FairnessAuditor(
        state.feedback_service.store,
        catalog,
        FairlearnMetrics(),  # imports Fairlearn on the first audit only
        max_rows=settings.fairness_max_rows,
        window=timedelta(seconds=settings.fairness_window_seconds),
    )
    if settings.fairness_audit_interval_seconds == 0:
        return auditor, None
    watch = FairnessWatch(
        auditor, catalog.registry, interval_s=settings.fairness_audit_interval_seconds
    )
    metrics.registry.register(FairnessCollector(watch))
    return auditor, watch
