"""Who hears of what from settings: the quota webhook and the quota alerts' sink, and the
built-in alert rules (metrics, drift, concept drift) with their own webhook."""

from __future__ import annotations

import logging
from collections.abc import Callable

from modelgate.core.admission.quotas import QuotaAlert
from modelgate.core.monitoring.alerts import AlertEvaluator
from modelgate.core.monitoring.concept import ConceptAlertSource, ConceptMonitor
from modelgate.core.monitoring.monitor import DriftAlertSource, Monitor
from modelgate.core.monitoring.ports import AlertSource
from modelgate.notify.webhook import WebhookSender
from modelgate.observability.alerting import MetricsAlertSource, alert_sink, read_alert_rules
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.settings import Settings

__all__ = ["build_alerts", "build_webhook", "quota_alert_sink"]

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
) -> tuple[AlertEvaluator | None, WebhookSender | None]:
    """The built-in alerts (None when there are no rules) and their webhook, if any; with
    ``monitor``, rules may also use its drift metrics."""
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
    evaluator = AlertEvaluator(rules, sources, alert_sink(webhook), interval_s=interval)
    return evaluator, webhook
