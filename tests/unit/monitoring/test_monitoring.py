"""The monitor's windows and reports, with the credit-risk demo profile and a fake registry:
bounded windows, time windows, versions without a reference, and the drift alert source."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelgate.core.monitoring.alerts import AlertEvaluator, AlertEvent, AlertRule
from modelgate.core.monitoring.monitor import DriftAlertSource, Monitor
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.requests import CompletedInference, InferenceRequest, InferenceResponse
from modelgate.core.serving.tensors import Tensor
from modelgate.demo import credit_risk
from modelgate.errors import ModelgateError
from modelgate.repository.filesystem import FileModelRepository


@dataclass(eq=False)  # hashed by identity, like LoadedVersion
class Version:
    """What the monitor reads of a loaded version."""

    name: str
    version: int
    manifest: ModelManifest
    path: str


class Registry:
    def __init__(self, versions: list[Version]):
        self._versions = versions

    def versions(self, name: str) -> list[Version]:
        return [v for v in self._versions if v.name == name]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def credit(demo_models: Path) -> list[Version]:
    sources = FileModelRepository(str(demo_models)).versions("credit-risk")
    return [Version("credit-risk", s.version, s.manifest, s.path) for s in sources]


def completed(manifest: ModelManifest, version: str, features: Any) -> CompletedInference:
    rows = features.shape[0]
    probabilities = np.tile(np.array([[0.9, 0.1]], dtype=np.float32), (rows, 1))
    response = InferenceResponse(
        manifest.name,
        version,
        [
            Tensor("label", "INT64", np.zeros(rows, dtype=np.int64)),
            Tensor("probabilities", "FP32", probabilities),
        ],
    )
    request = InferenceRequest(manifest.name, version, [Tensor("features", "FP32", features)])
    return CompletedInference(None, request, response, manifest, {"features": features})


async def test_window_keeps_the_last_rows_and_recent_chunks(credit: list[Version]) -> None:
    clock = Clock()
    monitor = Monitor(Registry(credit), window_rows=300, window_s=60, min_rows=10, clock=clock)  # type: ignore[arg-type]
    manifest = credit[1].manifest
    for seed in range(5):
        monitor.completed(completed(manifest, "2", credit_risk.generate(100, seed=seed).features))
    (report,) = await monitor.report("credit-risk", "2")
    assert report.rows == 300 and report.requests == 3
    clock.now += 61
    (report,) = await monitor.report("credit-risk", "2")
    assert report.rows == 0 and report.status == "insufficient data"


async def test_confidence_and_label_drift_of_constant_answers(credit: list[Version]) -> None:
    monitor = Monitor(Registry(credit), min_rows=10)  # type: ignore[arg-type]
    features = credit_risk.generate(400, seed=5).features
    monitor.completed(completed(credit[1].manifest, "2", features))
    (report,) = await monitor.report("credit-risk", "2")
    conf = report.confidence["probabilities"]
    assert conf.mean_top_probability == pytest.approx(0.9)
    assert conf.low_confidence_share == 0.0
    labels = next(p for p in report.predictions if p.output == "label")
    assert labels.frequencies == {"repaid": 1.0, "default": 0.0}
    # every answer says "repaid" with p(default) = 0.1: the output distribution has moved
    assert report.drift and {p.status for p in report.predictions} == {"drift"}
    assert all(f.status != "drift" for f in report.features)


async def test_a_version_without_reference_reports_so(
    credit: list[Version], tmp_path: Path
) -> None:
    bare = Version("credit-risk", 3, credit[1].manifest, str(tmp_path))
    monitor = Monitor(Registry([bare]), min_rows=1)  # type: ignore[arg-type]
    monitor.completed(completed(bare.manifest, "3", credit_risk.generate(50, seed=1).features))
    (report,) = await monitor.report("credit-risk")
    assert report.status == "no reference" and not report.drift and report.rows == 50


async def test_report_of_a_version_not_loaded_is_not_found(credit: list[Version]) -> None:
    monitor = Monitor(Registry(credit))  # type: ignore[arg-type]
    with pytest.raises(ModelgateError, match="not loaded"):
        await monitor.report("credit-risk", "9")


async def test_drift_fires_a_built_in_alert(credit: list[Version]) -> None:
    clock = Clock()
    monitor = Monitor(Registry(credit), min_rows=10, clock=clock)  # type: ignore[arg-type]
    features = credit_risk.generate(300, seed=6).features.copy()
    features[:, credit_risk.FEATURE_NAMES.index("annual_income")] *= 3
    monitor.completed(completed(credit[1].manifest, "2", features))
    events: list[AlertEvent] = []
    rule = AlertRule(name="Drift", metric="feature_drift", threshold=0.2, min_requests=100)
    alerts = AlertEvaluator([rule], [DriftAlertSource(monitor)], events.append, clock=clock)
    alerts.evaluate()  # starts reading the profiles in the background
    await monitor.report("credit-risk")  # (and so does a report: the profiles are read)
    alerts.evaluate()
    assert [(e.state, e.subject) for e in events] == [("firing", "credit-risk")]
    assert events[0].value is not None and events[0].value > 0.2


async def test_drift_fires_without_a_report_when_few_requests_came(
    credit: list[Version],
) -> None:
    """Requests are folded into the windows every FOLD_EVERY requests or before a report;
    the alert source folds them itself, so a quiet model's drift is seen though nobody
    asked for its report (the learning loop's drift trigger waits on this alert)."""
    clock = Clock()
    monitor = Monitor(Registry(credit), min_rows=10, clock=clock)  # type: ignore[arg-type]
    features = credit_risk.generate(300, seed=6).features.copy()
    features[:, credit_risk.FEATURE_NAMES.index("annual_income")] *= 3
    monitor.completed(completed(credit[1].manifest, "2", features))  # one request
    events: list[AlertEvent] = []
    rule = AlertRule(name="Drift", metric="feature_drift", threshold=0.2)
    alerts = AlertEvaluator([rule], [DriftAlertSource(monitor)], events.append, clock=clock)
    for _ in range(200):  # the profiles are read in the background
        alerts.evaluate()
        if events:
            break
        await asyncio.sleep(0.02)
    assert [(e.state, e.subject) for e in events] == [("firing", "credit-risk")]


async def test_a_broken_reference_is_ignored_and_a_reload_reads_it_again(
    credit: list[Version], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "reference.json").write_text("{not json")
    broken = Version("credit-risk", 3, credit[1].manifest, str(tmp_path))
    registry = Registry([broken])
    monitor = Monitor(registry, min_rows=1)  # type: ignore[arg-type]
    monitor.completed(completed(broken.manifest, "3", credit_risk.generate(50, seed=1).features))
    (report,) = await monitor.report("credit-risk")
    assert report.status == "no reference"
    assert "ignoring the reference profile" in caplog.text
    (tmp_path / "reference.json").write_text((Path(credit[1].path) / "reference.json").read_text())
    registry._versions = [Version("credit-risk", 3, credit[1].manifest, str(tmp_path))]
    (report,) = await monitor.report("credit-risk")
    assert report.status != "no reference" and len(report.features) == 12
