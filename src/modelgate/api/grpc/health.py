"""grpc.health.v1 answered from the server's readiness."""

# The servicer methods are named by the proto (Check).
# ruff: noqa: N802

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from modelgate.api.grpc.calls import SERVICE_NAME
from modelgate.core.pipeline.inference import InferenceService

__all__ = ["ReadinessHealthServicer"]


class ReadinessHealthServicer(health_aio.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 whose status is the server's readiness at the time of each Check.

    The server starts gRPC before the preload models are warm, so a status set once at start
    would be wrong; Check asks
    :meth:`~modelgate.core.serving.catalog.ModelCatalog.server_ready` and stores the answer,
    so Watch streams see it change once a Check has observed it. The overall service ("")
    and ``inference.GRPCInferenceService`` are known; any other name is NOT_FOUND.
    """

    def __init__(self, service: InferenceService):
        super().__init__()
        self.service = service
        self._server_status[""] = health_pb2.HealthCheckResponse.NOT_SERVING
        self._server_status[SERVICE_NAME] = health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: Any, context: Any) -> Any:
        if request.service not in ("", SERVICE_NAME):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.service.catalog.server_ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if self._server_status.get(request.service) != status:
            await self.set("", status)
            await self.set(SERVICE_NAME, status)
        return health_pb2.HealthCheckResponse(status=status)
