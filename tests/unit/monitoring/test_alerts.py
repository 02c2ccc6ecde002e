"""Built-in alerts: rules fire after ``for_seconds``, are sent once until they resolve, resolve
once; windows over the core's metrics compute like PromQL; rules come from settings; a
firing alert reaches the webhook signed."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from modelgate.boot.alerts import build_alerts
from modelgate.core.monitoring.alerts import DEFAULT_RULES, AlertEvaluator, AlertEvent, AlertRule
from modelgate.core.monitoring.ports import Reading
from modelgate.notify.webhook import WebhookSender, signature
from modelgate.observability.alerting import (
    MetricsAlertSource,
    alert_sink,
    histogram_quantile,
    read_alert_rules,
)
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.settings import Settings, load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedSource:
    """Readings set by the test, for any metric in ``metrics``."""

    def __init__(self, *metrics: str) -> None:
        self.metrics = set(metrics)
        self.readings: dict[str, dict[str, Reading]] = {}
        self.advanced: list[float] = []

    def knows(self, metric: str) -> bool:
        return metric in self.metrics

    def advance(self, now: float) -> None:
        self.advanced.append(now)

    def read(self, metric: str, window_s: float) -> Mapping[str, Reading]:
        return self.readings.get(metric, {})

    def set(self, metric: str, **values: float) -> None:
        self.readings[metric] = {model: Reading(v, 100) for model, v in values.items()}


def evaluator(
    *rules: AlertRule, source: ScriptedSource, clock: Clock
) -> tuple[AlertEvaluator, list[AlertEvent]]:
    sent: list[AlertEvent] = []
    wall = lambda: datetime.fromtimestamp(clock.now, UTC)  # noqa: E731
    return AlertEvaluator(rules, [source], sent.append, clock=clock, wall=wall), sent


def rule(**fields: object) -> AlertRule:
    return AlertRule.model_validate({"name": "Slow", "metric": "latency_p99", **fields})


def test_an_alert_fires_after_its_for_duration_once_then_resolves_once() -> None:
    clock, source = Clock(), ScriptedSource("latency_p99")
    alerts, sent = evaluator(rule(threshold=0.5, for_seconds=60), source=source, clock=clock)
    source.set("latency_p99", m=0.8)
    assert alerts.evaluate() == []  # pending
    clock.now += 30
    assert alerts.evaluate() == []
    clock.now += 30
    [fired] = alerts.evaluate()
    assert (fired.state, fired.subject, fired.value) == ("firing", "m", 0.8)
    assert fired.since == datetime.fromtimestamp(1000.0, UTC)
    for _ in range(5):  # still above: not sent again
        clock.now += 15
        assert alerts.evaluate() == []
    assert alerts.firing == [("Slow", "m")]
    source.set("latency_p99", m=0.2)
    clock.now += 15
    [resolved] = alerts.evaluate()
    assert (resolved.state, resolved.value, resolved.since) == ("resolved", 0.2, fired.since)
    assert resolved.payload()["fingerprint"] == fired.payload()["fingerprint"]
    assert alerts.evaluate() == [] and alerts.firing == []
    assert sent == [fired, resolved]


def test_a_condition_shorter_than_for_sends_nothing() -> None:
    clock, source = Clock(), ScriptedSource("latency_p99")
    alerts, sent = evaluator(rule(threshold=0.5, for_seconds=60), source=source, clock=clock)
    source.set("latency_p99", m=0.8)
    alerts.evaluate()
    clock.now += 30
    source.set("latency_p99", m=0.1)
    alerts.evaluate()
    clock.now += 60
    source.set("latency_p99", m=0.8)  # pending starts again from here
    assert alerts.evaluate() == [] and sent == []


def test_each_model_is_its_own_alert_and_a_rule_may_name_one() -> None:
    clock, source = Clock(), ScriptedSource("error_rate")
    every = AlertRule(name="Errors", metric="error_rate", threshold=0.1)
    only_b = AlertRule(name="ErrorsB", metric="error_rate", threshold=0.1, model="b")
    alerts, _ = evaluator(every, only_b, source=source, clock=clock)
    source.set("error_rate", a=0.5, b=0.5, c=0.01)
    fired = {(e.rule.name, e.subject) for e in alerts.evaluate()}
    assert fired == {("Errors", "a"), ("Errors", "b"), ("ErrorsB", "b")}


def test_below_threshold_rules_and_too_few_requests() -> None:
    clock, source = Clock(), ScriptedSource("requests_per_second", "latency_p99")
    quiet = AlertRule(name="Quiet", metric="requests_per_second", threshold=1, op="<")
    alerts, _ = evaluator(quiet, source=source, clock=clock)
    source.readings["requests_per_second"] = {"m": Reading(0.5, 30)}
    assert [e.state for e in alerts.evaluate()] == ["firing"]
    clock.now += 15
    source.readings["requests_per_second"] = {}  # no traffic at all: no data, resolved
    [resolved] = alerts.evaluate()
    assert resolved.state == "resolved" and resolved.value is None

    strict = rule(threshold=0.5, min_requests=50)
    alerts, _ = evaluator(strict, source=source, clock=clock)
    source.readings["latency_p99"] = {"m": Reading(9.0, 49)}
    assert alerts.evaluate() == []


def test_another_source_adds_a_metric() -> None:
    """How drift (model monitoring, later) plugs in: one more source that knows it."""
    clock, metrics, drift = Clock(), ScriptedSource("latency_p99"), ScriptedSource("drift")
    sent: list[AlertEvent] = []
    drifting = AlertRule(name="Drift", metric="drift", threshold=0.2, window_seconds=3600)
    alerts = AlertEvaluator(
        [rule(threshold=1), drifting], [metrics, drift], sent.append, clock=clock
    )
    drift.set("drift", m=0.3)
    alerts.evaluate()
    assert [(e.rule.name, e.state) for e in sent] == [("Drift", "firing")]
    assert metrics.advanced == drift.advanced == [clock.now]


def test_bad_rule_sets_are_refused() -> None:
    source = ScriptedSource("latency_p99")
    with pytest.raises(ValueError, match="defined twice"):
        AlertEvaluator([rule(threshold=1), rule(threshold=2)], [source], print)
    with pytest.raises(ValueError, match="no source knows 'drift'"):
        AlertEvaluator([rule(metric="drift", threshold=1)], [source], print)


def test_a_failing_notifier_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    clock, source = Clock(), ScriptedSource("error_rate")
    seen: list[str] = []

    def notify(event: AlertEvent) -> None:
        seen.append(event.subject)
        if event.subject == "a":
            raise RuntimeError("receiver down")

    alerts = AlertEvaluator(
        [AlertRule(name="E", metric="error_rate", threshold=0.1)], [source], notify, clock=clock
    )
    source.set("error_rate", a=1.0, b=1.0)
    with caplog.at_level(logging.ERROR, "modelgate.alerts"):
        assert len(alerts.evaluate()) == 2
    assert seen == ["a", "b"] and "alert notification failed" in caplog.text


async def test_the_background_task_evaluates_every_interval() -> None:
    source = ScriptedSource("latency_p99")
    alerts = AlertEvaluator([rule(threshold=1)], [source], print, interval_s=0.01)
    await alerts.start()
    await asyncio.sleep(0.1)
    await alerts.close()
    count = len(source.advanced)
    assert count >= 3
    await asyncio.sleep(0.03)
    assert len(source.advanced) == count  # stopped


# -- windows over the core's metrics -------------------------------------------------------
def serve(metrics: PrometheusMetrics, model: str, status: str, seconds: float, n: int) -> None:
    for _ in range(n):
        metrics.served(model, "1", "acme", status, seconds, 1, 0)


def test_histogram_quantile_interpolates_like_promql() -> None:
    bounds = (0.5, 1.0, 2.5, float("inf"))
    # the case of deploy/prometheus/modelgate-rules.test.yml, where promtool says 2.47 s
    assert histogram_quantile(0.99, bounds, (60, 60, 120, 120)) == pytest.approx(2.47)
    assert histogram_quantile(0.5, bounds, (0, 0, 10, 10)) == pytest.approx(1.75)
    assert histogram_quantile(0.99, bounds, (0, 0, 0, 5)) == 2.5  # all above: highest bound


def test_windows_are_differences_of_cumulative_counts() -> None:
    metrics, clock = PrometheusMetrics(), Clock()
    source = MetricsAlertSource(metrics, retention_s=600)
    assert source.knows("latency_p99") and source.knows("latency_p99.9")
    assert source.knows("error_rate") and not source.knows("latency_p100")
    serve(metrics, "m", "internal", 5.0, 100)  # before the window: not in it
    source.advance(clock.now)
    assert source.read("error_rate", 60) == {}  # one record: no window yet
    clock.now += 60
    serve(metrics, "m", "ok", 0.003, 90)
    serve(metrics, "m", "overloaded", 0.0002, 5)
    serve(metrics, "m", "invalid_argument", 0.0002, 5)  # the client's error, not counted
    serve(metrics, "idle", "ok", 0.1, 0)
    source.advance(clock.now)
    assert source.read("error_rate", 60) == {"m": Reading(0.05, 100)}
    assert source.read("requests_per_second", 60) == {"m": Reading(100 / 60, 100)}
    [(model, p99)] = source.read("latency_p99", 60).items()
    assert model == "m" and 0.0025 < p99.value <= 0.005 and p99.count == 100
    clock.now += 60
    source.advance(clock.now)  # no traffic in the last minute
    assert source.read("error_rate", 60) == {}
    assert source.read("error_rate", 120)["m"].value == 0.05


def test_records_past_the_retention_are_dropped() -> None:
    metrics, clock = PrometheusMetrics(), Clock()
    source = MetricsAlertSource(metrics, retention_s=100)
    for _ in range(20):
        serve(metrics, "m", "internal", 0.01, 1)
        source.advance(clock.now)
        clock.now += 15
    # a window longer than what is kept covers what is kept (about 100 s)
    reading = source.read("error_rate", 3600)["m"]
    assert 100 / 15 <= reading.count <= 100 / 15 + 2


# -- rules from settings --------------------------------------------------------------------
def test_rules_come_from_a_file_inline_or_the_defaults(tmp_path: Path) -> None:
    assert read_alert_rules(None) == list(DEFAULT_RULES)
    assert read_alert_rules([]) == []
    listed = tmp_path / "alerts.yml"
    listed.write_text("- {name: Slow, metric: latency_p95, threshold: 0.2, for_seconds: 60}\n")
    [slow] = read_alert_rules(listed)
    assert (slow.metric, slow.threshold, slow.for_seconds, slow.op) == ("latency_p95", 0.2, 60, ">")
    wrapped = tmp_path / "wrapped.yml"
    wrapped.write_text("rules:\n  - {name: E, metric: error_rate, threshold: 0.1}\n")
    assert [r.name for r in read_alert_rules(wrapped)] == ["E"]


def test_bad_rules_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="alert rule 2") as caught:
        read_alert_rules([{"name": "A", "metric": "error_rate", "threshold": 1}, {"name": "B"}])
    assert "threshold" in str(caught.value)
    with pytest.raises(ValueError, match="alert rule 1"):
        read_alert_rules([{"name": "A", "metric": "error_rate", "threshold": 1, "wndow": 5}])
    with pytest.raises(ValueError, match="alert rules file"):
        read_alert_rules(tmp_path / "missing.yml")
    settings = Settings(alert_rules=[{"name": "D", "metric": "drift", "threshold": 0.2}])
    with pytest.raises(ValueError, match="no source knows 'drift'"):
        build_alerts(settings, PrometheusMetrics())


def test_settings_take_rules_as_a_path_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGATE_ALERT_RULES", "/etc/modelgate/alerts.yml")
    assert load_settings().alert_rules == Path("/etc/modelgate/alerts.yml")
    rules = [{"name": "E", "metric": "error_rate", "threshold": 0.1}]
    monkeypatch.setenv("MODELGATE_ALERT_RULES", json.dumps(rules))
    assert load_settings().alert_rules == rules
    monkeypatch.setenv("MODELGATE_ALERT_RULES", "[]")
    assert build_alerts(load_settings(), PrometheusMetrics()) == (None, None)


# -- end to end: metrics -> rule -> signed webhook ------------------------------------------
async def test_a_firing_alert_is_posted_signed_once_then_resolved() -> None:
    received: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(204)

    webhook = WebhookSender(
        "http://alerts.test/hook", secret="s3cret", transport=httpx.MockTransport(answer)
    )
    metrics, clock = PrometheusMetrics(), Clock()
    errors = AlertRule(
        name="Errors", metric="error_rate", threshold=0.05, window_seconds=60, min_requests=10
    )
    alerts = AlertEvaluator(
        [errors], [MetricsAlertSource(metrics)], alert_sink(webhook), clock=clock
    )
    alerts.evaluate()
    for _ in range(3):  # failing for three evaluations: one alert
        clock.now += 15
        serve(metrics, "credit-risk", "internal", 0.01, 5)
        serve(metrics, "credit-risk", "ok", 0.01, 5)
        alerts.evaluate()
    clock.now += 60
    serve(metrics, "credit-risk", "ok", 0.01, 50)
    alerts.evaluate()  # the last minute had no errors: resolved
    await webhook.close()
    events = [orjson.loads(r.content) for r in received]
    assert [(e["type"], e["alert"], e["model"]) for e in events] == [
        ("alert.firing", "Errors", "credit-risk"),
        ("alert.resolved", "Errors", "credit-risk"),
    ]
    assert events[0]["value"] == 0.5 and events[1]["value"] == 0.0
    assert events[0]["fingerprint"] == events[1]["fingerprint"]
    first = received[0]
    assert first.headers["x-modelgate-event"] == "alert.firing"
    stamp = int(first.headers["x-modelgate-signature"].split(",")[0].removeprefix("t="))
    assert first.headers["x-modelgate-signature"] == signature("s3cret", stamp, first.content)
