"""A node skips what its gateway already recorded for a call it forwarded (usage, feedback,
payloads), and records every other caller's call as any server does; an all-in-one server
and a gateway record every call (core/gateway/node_calls.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelgate.boot.components import build_core_components
from modelgate.core.access.identity import Plan, Principal
from modelgate.core.gateway.node_calls import from_gateway
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.serving.requests import CompletedInference, InferenceRequest
from modelgate.core.serving.tensors import Tensor
from modelgate.settings import Settings
from modelgate.testing import MemoryRepository, RecordingPredictor
from tests.conftest import FIXTURE_MODELS

GATEWAY = Principal("*", "bootstrap-admin", frozenset({"infer"}), Plan("p"), "admin")
TENANT = Principal("ten_a", "key_1", frozenset({"infer"}), Plan("p"), "key")


class _Usage:
    def __init__(self) -> None:
        self.tenants: list[str] = []

    def record(self, tenant_id: str, *args: Any, **kwargs: Any) -> None:
        self.tenants.append(tenant_id)


class _Listener:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def completed(self, inference: CompletedInference) -> None:
        principal = inference.principal
        self.seen.append(principal.tenant_id if principal is not None else "-")


def _request() -> InferenceRequest:
    return InferenceRequest("m", None, [Tensor("x", "FP32", np.ones((2, 2), np.float32))])


def test_only_the_bootstrap_admin_key_is_a_gateways_call() -> None:
    assert from_gateway(GATEWAY)
    assert not from_gateway(TENANT)
    assert not from_gateway(None)  # access control off: no caller to tell apart


async def test_a_node_meters_and_records_only_calls_not_forwarded_by_its_gateway() -> None:
    registry = ModelRegistry(
        MemoryRepository({"m": {1: {}}}), {"python": lambda source: RecordingPredictor()}
    )
    usage, monitor, feedback = _Usage(), _Listener(), _Listener()
    service = InferenceService(
        registry,
        usage=usage,
        listeners=[monitor, feedback],
        forwarded=from_gateway,
        forwarded_listeners=[monitor],
    )
    try:
        forwarded = await service.infer(_request(), GATEWAY)
        direct = await service.infer(_request(), TENANT)
    finally:
        await registry.close()
    # the same answer either way: only the bookkeeping differs
    np.testing.assert_array_equal(forwarded.outputs[0].data, direct.outputs[0].data)
    assert usage.tenants == ["ten_a"]
    assert feedback.seen == ["ten_a"]
    assert monitor.seen == ["*", "ten_a"]  # drift is the node's to watch


async def test_without_the_test_every_call_is_recorded() -> None:
    registry = ModelRegistry(
        MemoryRepository({"m": {1: {}}}), {"python": lambda source: RecordingPredictor()}
    )
    usage, listener = _Usage(), _Listener()
    service = InferenceService(registry, usage=usage, listeners=[listener])
    try:
        await service.infer(_request(), GATEWAY)
    finally:
        await registry.close()
    assert usage.tenants == ["*"]
    assert listener.seen == ["*"]


@pytest.mark.parametrize(("role", "skips"), [("node", True), ("all", False)])
async def test_only_a_node_skips_its_gateways_calls(tmp_path: Path, role: str, skips: bool) -> None:
    components = build_core_components(
        Settings(role=role, data_dir=tmp_path, model_repository=FIXTURE_MODELS)  # type: ignore[arg-type]
    )
    try:
        service = components.service
        assert (service.forwarded is from_gateway) is skips
        monitor = service.listeners[0]
        assert service.forwarded_listeners == (monitor,)
        assert type(monitor).__name__ == "Monitor"
    finally:
        await components.close()
