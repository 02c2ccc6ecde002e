"""Building the gRPC server: its connection limits and its services on one ``grpc.aio``
server (the caller adds ports and starts it): ``inference.GRPCInferenceService``,
``grpc.health.v1.Health`` and, unless turned off, server reflection
(``grpc.reflection.v1alpha.ServerReflection``), so that grpcurl, Postman and Evans find
the services and their messages without .proto files. Reflection answers from the
descriptors compiled into the process: the schema only, which is Triton's public proto; no
model, tenant or setting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection as server_reflection
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.api.forwarded import TrustedProxies
from modelgate.api.grpc.health import ReadinessHealthServicer
from modelgate.api.grpc.servicer import DEFAULT_MAX_ELEMENTS, GrpcInferenceServicer
from modelgate.core.access.authentication import Authenticator
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.admission.backpressure import RefusalBackpressure
from modelgate.core.pipeline.inference import InferenceService
from modelgate.observability.logs import RequestLog
from modelgate.observability.tracing import OtelTracer

__all__ = ["GrpcConnectionLimits", "create_grpc_server"]


@dataclass(frozen=True, slots=True)
class GrpcConnectionLimits:
    """What one connection may hold and how long it may stay; ``settings.grpc_*``."""

    #: a call's metadata, in bytes (gRPC core's soft and hard limit alike)
    max_metadata_bytes: int = 16 * 1024
    #: a connection with no call for this long gets GOAWAY
    max_connection_idle_s: float = 300.0
    #: calls at once on one connection
    max_concurrent_streams: int = 1024
    #: open connections of this server; gRPC core refuses more
    max_connections: int = 4096
    #: TCP, TLS and the HTTP/2 preface must be done within this time
    handshake_timeout_s: float = 10.0

    def options(self) -> list[tuple[str, int]]:
        ms = 1000
        return [
            ("grpc.max_metadata_size", self.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", self.max_metadata_bytes),
            ("grpc.max_connection_idle_ms", int(self.max_connection_idle_s * ms)),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.server_handshake_timeout_ms", int(self.handshake_timeout_s * ms)),
            # keepalive: the server pings an idle peer each minute and drops it when no
            # answer comes in 20 s (a vanished client's connection does not linger); clients
            # may ping every 5 s at most, with or without calls (modelgate's gateways ping
            # nodes every 10 s, cluster/client.py), twice too often and they get GOAWAY
            ("grpc.keepalive_time_ms", 60 * ms),
            ("grpc.keepalive_timeout_ms", 20 * ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5 * ms),
            ("grpc.http2.max_ping_strikes", 2),
        ]


def create_grpc_server(
    service: InferenceService,
    *,
    max_message_bytes: int,
    reuse_port: bool,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    authenticator: Authenticator | None = None,
    abuse: AbuseGuard | None = None,
    tracer: OtelTracer | None = None,
    requests: RequestLog | None = None,
    limits: GrpcConnectionLimits = GrpcConnectionLimits(),
    forwarded_allow_ips: str = "",
    backpressure: RefusalBackpressure | None = None,
    reflection: bool = True,
) -> Any:
    """A ``grpc.aio`` server with its services added; the caller adds ports and starts it.

    A message over ``max_message_bytes`` is refused by gRPC itself (RESOURCE_EXHAUSTED), as
    is metadata over ``limits.max_metadata_bytes``; ``max_elements`` bounds a tensor's
    element count before anything is allocated. ``forwarded_allow_ips``: the peers whose
    ``x-forwarded-for`` metadata names the client (api/forwarded.py); none by default.
    ``backpressure``: holds a flooding peer's memo refusals (None: off). ``reflection``:
    serve server reflection (``settings.grpc_reflection``).
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
            *limits.options(),
        ]
    )
    _add_inference_service(
        GrpcInferenceServicer(
            service,
            max_elements=max_elements,
            authenticator=authenticator,
            abuse=abuse,
            tracer=tracer,
            requests=requests,
            proxies=TrustedProxies(forwarded_allow_ips) or None,
            backpressure=backpressure,
        ),
        server,
    )
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealthServicer(service), server)
    if reflection:
        served = (
            service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            health.SERVICE_NAME,
            server_reflection.SERVICE_NAME,
        )
        server_reflection.enable_server_reflection(served, server)
    return server


class _Handlers:
    """Takes the handlers the generated ``add_..._to_server`` would add to a server."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers again, as one generic handler

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, handlers


def _add_inference_service(servicer: GrpcInferenceServicer, server: Any) -> None:
    """The generated service's handlers, but ``ModelInfer``'s request left as bytes: the
    servicer reads the model it names and asks the refusal memo before decoding it
    (api/grpc/raw_request.py)."""
    taken = _Handlers()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, taken)
    handlers = dict(taken.handlers)
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        servicer.ModelInfer,
        request_deserializer=None,
        response_serializer=service_pb2.ModelInferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(taken.service, handlers),)
    )
    server.add_registered_method_handlers(taken.service, handlers)
