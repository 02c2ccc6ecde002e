"""Model life cycle: versions, default choice, reload without failing requests, eviction."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.registry import ModelRegistry, RegistryPolicy
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.testing import MemoryRepository, RecordingPredictor


class Loader:
    def __init__(self) -> None:
        self.loaded: list[tuple[str, int]] = []
        self.predictors: list[RecordingPredictor] = []

    def __call__(self, source: VersionSource) -> RecordingPredictor:
        options = source.manifest.runtime_options
        if options.get("broken"):
            raise RuntimeError("corrupt weights")
        self.loaded.append((source.manifest.name, source.version))
        predictor = RecordingPredictor(
            factor=float(options.get("factor", source.version)),
            delay=float(options.get("delay", 0)),
        )
        self.predictors.append(predictor)
        return predictor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _registry(
    models: dict[str, dict[int, dict[str, Any]]], **policy: Any
) -> tuple[ModelRegistry, Loader, Clock]:
    loader, clock = Loader(), Clock()
    registry = ModelRegistry(
        MemoryRepository(models), {"python": loader}, policy=RegistryPolicy(**policy), clock=clock
    )
    return registry, loader, clock


async def _infer(registry: ModelRegistry, name: str, version: str | None = None) -> float:
    loaded = await registry.acquire(name, version)
    out = await loaded.runtime.infer({"x": np.ones((1, 2), np.float32)})
    return float(out["y"][0, 0])


async def test_preload_models_load_at_start_and_others_on_first_use() -> None:
    registry, loader, _ = _registry({"a": {1: {"preload": True}}, "b": {1: {}}})
    assert not registry.ready
    await registry.start()
    assert registry.ready and loader.loaded == [("a", 1)]
    assert await _infer(registry, "b") == 1.0
    assert ("b", 1) in loader.loaded


async def test_the_default_version_is_the_highest_unless_the_manifest_names_one() -> None:
    registry, _, _ = _registry(
        {"a": {1: {}, 2: {}, 3: {}}, "b": {1: {}, 2: {"default_version": 1}}}
    )
    assert await _infer(registry, "a") == 3.0
    assert await _infer(registry, "a", "2") == 2.0
    assert await _infer(registry, "b") == 1.0


@pytest.mark.parametrize("version", ["9", "latest", "-1"])
async def test_unknown_versions_are_not_found(version: str) -> None:
    registry, _, _ = _registry({"a": {1: {}}})
    with pytest.raises(ModelgateError) as info:
        await registry.acquire("a", version)
    assert info.value.kind is ErrorKind.NOT_FOUND


async def test_unknown_model_is_not_found() -> None:
    registry, _, _ = _registry({})
    with pytest.raises(ModelgateError) as info:
        await registry.acquire("nope", None)
    assert info.value.kind is ErrorKind.NOT_FOUND


async def test_concurrent_first_use_loads_once() -> None:
    registry, loader, _ = _registry({"a": {1: {}}})
    await asyncio.gather(*(_infer(registry, "a") for _ in range(10)))
    assert loader.loaded == [("a", 1)]


async def test_a_failed_reload_leaves_the_old_version_serving() -> None:
    models: dict[str, dict[int, dict[str, Any]]] = {"a": {1: {"runtime_options": {"factor": 5}}}}
    registry, _, _ = _registry(models)
    await registry.load("a")
    models["a"][1] = {"runtime_options": {"broken": True}}
    with pytest.raises(ModelgateError) as info:
        await registry.load("a")
    assert "corrupt weights" in info.value.message
    assert await _infer(registry, "a") == 5.0


async def test_reload_lets_in_flight_requests_finish_on_the_old_version() -> None:
    models: dict[str, dict[int, dict[str, Any]]] = {
        "a": {1: {"runtime_options": {"factor": 1, "delay": 0.2}, "execution": "thread"}}
    }
    registry, loader, _ = _registry(models, drain_timeout_s=5)
    loaded = await registry.acquire("a", None)
    loaded.enter()
    slow = asyncio.ensure_future(loaded.runtime.infer({"x": np.ones((1, 2), np.float32)}))
    await asyncio.sleep(0.05)
    models["a"][1] = {"runtime_options": {"factor": 7}}
    await registry.load("a")
    assert await _infer(registry, "a") == 7.0  # new requests see the new version at once
    result = await slow  # the old one finishes its request
    loaded.leave()
    assert float(result["y"][0, 0]) == 1.0
    await asyncio.sleep(0.05)
    assert loader.predictors[0].closed


async def test_unload_then_requests_are_unavailable_until_loaded_again() -> None:
    registry, _, _ = _registry({"a": {1: {}}})
    await _infer(registry, "a")
    await registry.unload("a")
    with pytest.raises(ModelgateError) as info:
        await registry.acquire("a", None)
    assert info.value.kind is ErrorKind.UNAVAILABLE
    assert registry.index() == [{"name": "a", "state": "UNAVAILABLE", "reason": "unloaded"}]
    await registry.load("a")
    assert await _infer(registry, "a") == 1.0


async def test_idle_models_are_unloaded_but_preloaded_ones_stay() -> None:
    registry, loader, clock = _registry(
        {"hot": {1: {"preload": True}}, "cold": {1: {}}}, idle_unload_s=60
    )
    await registry.start()
    await _infer(registry, "cold")
    clock.now = 120
    await registry.evict()
    assert registry.get("cold", None) is None
    assert registry.get("hot", None) is not None
    assert await _infer(registry, "cold") == 1.0  # comes back on first use
    assert loader.loaded.count(("cold", 1)) == 2


async def test_the_memory_budget_unloads_least_recently_used_first() -> None:
    registry, _, clock = _registry(
        {"a": {1: {}}, "b": {1: {}}, "c": {1: {}}}, memory_budget_bytes=0
    )
    # The fake repository's folders do not exist, so each version weighs 0 bytes: give sizes.
    for name in ("a", "b", "c"):
        clock.now += 1
        await _infer(registry, name)
        registry.get(name, None).size_bytes = 100  # type: ignore[union-attr]
    registry.policy = RegistryPolicy(memory_budget_bytes=250)
    clock.now += 1
    await _infer(registry, "a")  # a is now the most recently used
    await registry.evict()
    assert registry.get("b", None) is None
    assert registry.get("a", None) is not None and registry.get("c", None) is not None


async def test_warm_up_decides_inline_or_thread() -> None:
    registry, _, _ = _registry(
        {"fast": {1: {}}, "slow": {1: {"runtime_options": {"delay": 0.01}}}},
        inline_threshold_s=0.002,
    )
    assert not (await registry.acquire("fast", None)).offload
    assert (await registry.acquire("slow", None)).offload
