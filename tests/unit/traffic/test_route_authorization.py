"""A deployment whose version is gone falls back to the default version; the caller must
still be allowed to use the model that answers (a regression: the fallback skipped the
check, so a tenant that may not see a private model got its answer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.serving.requests import InferenceRequest
from modelgate.core.serving.tensors import Tensor
from modelgate.core.traffic.routing import Choice, DeploymentRouter
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.testing import MemoryRepository, RecordingPredictor


class _GoneVersionRouter:
    """A deployment that names version 9, which the repository does not have."""

    def choose(
        self, model: str, principal: Principal | None, parameters: Mapping[str, Any]
    ) -> Choice:
        return Choice(model=model, version="9", variant="stable", stage="stable", revision=1)


def _service() -> InferenceService:
    registry = ModelRegistry(
        MemoryRepository({"private": {1: {"tenants": ["owner"]}}}),
        {"python": lambda source: RecordingPredictor()},
    )
    router: Any = _GoneVersionRouter()
    deployments: DeploymentRouter = router
    return InferenceService(registry, deployments=deployments)


def _request() -> InferenceRequest:
    return InferenceRequest("private", None, [Tensor("x", "FP32", np.ones((1, 2), np.float32))])


def _tenant(tenant_id: str) -> Principal:
    return Principal(tenant_id, f"key_{tenant_id}", frozenset({"infer"}), Plan("p"))


@pytest.mark.parametrize("loaded_first", [True, False])
async def test_a_stranger_routed_to_a_gone_version_is_refused(loaded_first: bool) -> None:
    service = _service()
    try:
        if loaded_first:  # the default version already loaded: no first-use authorization
            await service.registry.acquire("private", None)
        with pytest.raises(ModelgateError) as refused:
            await service.infer(_request(), _tenant("stranger"))
        assert refused.value.kind is ErrorKind.NOT_FOUND
    finally:
        await service.registry.close()


async def test_the_owner_routed_to_a_gone_version_gets_the_default() -> None:
    service = _service()
    try:
        await service.registry.acquire("private", None)
        response = await service.infer(_request(), _tenant("owner"))
        assert response.model_version == "1"
        assert "deployment_variant" not in response.parameters  # the route was dropped
    finally:
        await service.registry.close()
