"""``modelgate_model_loaded`` follows what answers across loads, reloads, failed reloads and
unloads; a failed load leaves a warning naming the model, version and cause, and no path."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.registry import ModelRegistry
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.testing import MemoryRepository, RecordingPredictor


class Loader:
    """Versions load unless their manifest says ``broken`` (as a corrupt file would: an
    exception whose message holds the version's folder)."""

    def __call__(self, source: VersionSource) -> RecordingPredictor:
        if source.manifest.runtime_options.get("broken"):
            raise RuntimeError(f"corrupt weights in {source.path}/model.bin")
        return RecordingPredictor(factor=float(source.version))


def _setup(
    models: dict[str, dict[int, dict[str, Any]]],
) -> tuple[ModelRegistry, PrometheusMetrics]:
    metrics = PrometheusMetrics()
    registry = ModelRegistry(MemoryRepository(models), {"python": Loader()}, observer=metrics)
    return registry, metrics


def gauge(metrics: PrometheusMetrics, model: str, version: int) -> float | None:
    return metrics.registry.get_sample_value(
        "modelgate_model_loaded", {"model": model, "version": str(version)}
    )


def total(metrics: PrometheusMetrics) -> float | None:
    return metrics.registry.get_sample_value("modelgate_models_loaded")


async def answers(registry: ModelRegistry, model: str, version: int) -> bool:
    """Does ``version`` answer an inference now?"""
    try:
        loaded = registry.get(model, str(version))
    except ModelgateError:  # not among the serving versions
        return False
    if loaded is None:
        return False
    out = await loaded.runtime.infer({"x": np.ones((1, 2), np.float32)})
    return float(out["y"][0, 0]) == float(version)


async def assert_gauge_matches(
    registry: ModelRegistry, metrics: PrometheusMetrics, model: str, versions: list[int]
) -> None:
    for version in versions:
        serving = await answers(registry, model, version)
        assert gauge(metrics, model, version) == (1.0 if serving else 0.0), version
    assert total(metrics) == float(len(registry.versions(model)))


async def test_gauge_follows_load_reload_failed_reload_and_unload() -> None:
    models: dict[str, dict[int, dict[str, Any]]] = {"m": {1: {}, 2: {}}}
    registry, metrics = _setup(models)
    await registry.load("m")
    await assert_gauge_matches(registry, metrics, "m", [1, 2])
    assert gauge(metrics, "m", 1) == 1.0

    await registry.load("m")  # a reload: the same versions, fresh copies
    await asyncio.sleep(0)  # let the old copies retire
    await asyncio.gather(*registry._background)
    await assert_gauge_matches(registry, metrics, "m", [1, 2])
    assert gauge(metrics, "m", 2) == 1.0

    models["m"][2] = {"runtime_options": {"broken": True}}  # the reload fails: 1 and 2 stay
    with pytest.raises(ModelgateError):
        await registry.load("m")
    await assert_gauge_matches(registry, metrics, "m", [1, 2])
    assert gauge(metrics, "m", 2) == 1.0

    models["m"] = {2: {}}  # version 1 left the repository: a reload retires it
    await registry.load("m")
    await asyncio.gather(*registry._background)
    await assert_gauge_matches(registry, metrics, "m", [1, 2])
    assert gauge(metrics, "m", 1) == 0.0

    await registry.unload("m")
    await assert_gauge_matches(registry, metrics, "m", [1, 2])
    assert gauge(metrics, "m", 2) == 0.0
    assert total(metrics) == 0.0


async def test_a_failed_load_logs_a_warning_with_model_version_and_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, _ = _setup({"m": {1: {"runtime_options": {"broken": True}}}})
    with (
        caplog.at_level(logging.WARNING, logger="modelgate.registry"),
        pytest.raises(ModelgateError) as info,
    ):
        await registry.load("m")
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "model 'm' version 1" in line and "corrupt weights" in line
    # neither the log line nor the answer shows the version's folder on the host
    assert "/nonexistent" not in line
    assert "/nonexistent" not in info.value.message
    assert "m/1/model.bin" in info.value.message


async def test_an_invalid_manifest_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    registry, _ = _setup({"m": {1: {"execution": "sideways"}}})
    with (
        caplog.at_level(logging.WARNING, logger="modelgate.registry"),
        pytest.raises(ModelgateError),
    ):
        await registry.load("m")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("model m" in line and "execution" in line for line in lines)
