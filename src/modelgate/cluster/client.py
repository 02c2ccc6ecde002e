"""The gateway's OIP gRPC client to its nodes (a modelgate node, Triton, MLServer, KServe).

One ``grpc.aio`` channel per node address, kept open; every call has a timeout (the time
left of the caller's deadline), carries the node credential, the request id and the trace
context as metadata, and sends its tensors in ``raw_input_contents`` (as
``tritonclient.grpc`` does). The node's status comes back as the matching error kind, so a
client's error stays a client's error through the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.api.grpc.codec import contents_array, decode_parameters
from modelgate.api.tensor_bytes import from_bytes, to_bytes
from modelgate.core.cluster import NodeAnswer, NodeInfo
from modelgate.core.tensors import datatype_of
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["GrpcNodeClient"]

_InferInput = service_pb2.ModelInferRequest.InferInputTensor
_KINDS = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorKind.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: ErrorKind.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorKind.OVERLOADED,
    grpc.StatusCode.UNAVAILABLE: ErrorKind.UNAVAILABLE,
    grpc.StatusCode.CANCELLED: ErrorKind.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorKind.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED: ErrorKind.UNSUPPORTED,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorKind.FAILED_PRECONDITION,
    # the node refused the gateway's own credential: an operator's mistake, not the caller's
    grpc.StatusCode.UNAUTHENTICATED: ErrorKind.UNAVAILABLE,
    grpc.StatusCode.PERMISSION_DENIED: ErrorKind.UNAVAILABLE,
}


class GrpcNodeClient:
    def __init__(
        self,
        *,
        credential: str | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        max_elements: int = 16 * 1024 * 1024,
        root_certificates: bytes | None = None,
    ):
        self._credential = (("authorization", f"Bearer {credential}"),) if credential else ()
        self._max_elements = max_elements
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # a dead node is retried by the cluster, not by the channel: fail fast
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
            ("grpc.enable_retries", 0),
        ]
        self._root = root_certificates
        self._stubs: dict[str, tuple[Any, Any]] = {}

    def _stub(self, address: str) -> Any:
        found = self._stubs.get(address)
        if found is None:
            if self._root is not None:
                credentials = grpc.ssl_channel_credentials(self._root)
                channel = grpc.aio.secure_channel(address, credentials, options=self._options)
            else:
                channel = grpc.aio.insecure_channel(address, options=self._options)
            found = self._stubs[address] = (
                channel,
                service_pb2_grpc.GRPCInferenceServiceStub(channel),
            )
        return found[1]

    async def infer(
        self,
        node: NodeInfo,
        model: str,
        version: int,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        *,
        timeout_s: float,
        headers: Mapping[str, str],
    ) -> NodeAnswer:
        tensors = []
        raw = []
        for name, array in inputs.items():
            datatype = datatype_of(array)
            tensors.append(_InferInput(name=name, datatype=datatype, shape=array.shape))
            raw.append(to_bytes(datatype, array))
        request = service_pb2.ModelInferRequest(
            model_name=model,
            model_version=str(version),
            inputs=tensors,
            raw_input_contents=raw,
        )
        metadata = (*self._credential, *headers.items())
        started = time.monotonic()
        try:
            response = await self._stub(node.address).ModelInfer(
                request, timeout=timeout_s, metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise _error(node, exc, time.monotonic() - started >= timeout_s * 0.95) from None
        parameters = decode_parameters(response.parameters) if response.parameters else {}
        # the node's cache is not the gateway's: the gateway says its own
        parameters.pop("cache", None)
        return NodeAnswer(self._outputs(node, response), parameters)

    def _outputs(self, node: NodeInfo, response: Any) -> dict[str, np.ndarray[Any, Any]]:
        raw = response.raw_output_contents
        outputs: dict[str, np.ndarray[Any, Any]] = {}
        try:
            for index, tensor in enumerate(response.outputs):
                shape = list(tensor.shape)
                count = int(np.prod(shape)) if shape else 1
                if raw:
                    outputs[tensor.name] = from_bytes(
                        tensor.name, tensor.datatype, shape, count, raw[index]
                    )
                else:
                    outputs[tensor.name] = contents_array(
                        tensor.name, tensor.datatype, shape, count, tensor.contents
                    )
        except (ModelgateError, IndexError, ValueError) as exc:
            message = exc.message if isinstance(exc, ModelgateError) else str(exc)
            raise ModelgateError(
                ErrorKind.INTERNAL, f"node {node.id} sent a malformed answer: {message}"
            ) from None
        return outputs

    async def close(self) -> None:
        stubs, self._stubs = self._stubs, {}
        for channel, _stub in stubs.values():
            await channel.close(grace=None)


def _error(node: NodeInfo, exc: Any, timed_out: bool) -> ModelgateError:
    code = exc.code()
    kind = _KINDS.get(code, ErrorKind.INTERNAL)
    retry_after = None
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after":
            kind = ErrorKind.OVERLOADED  # the node's queue is full (UNAVAILABLE + Retry-After)
            try:
                retry_after = float(value)
            except ValueError:
                retry_after = 1.0
    if kind is ErrorKind.DEADLINE_EXCEEDED and timed_out:
        return ModelgateError(
            kind,
            f"node {node.id} did not answer in time",
            details={"timed_out": True},
        )
    detail = exc.details() or code.name
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        detail = f"node {node.id} refused the gateway's credential ({code.name})"
    elif kind in (ErrorKind.UNAVAILABLE, ErrorKind.INTERNAL):
        detail = f"node {node.id}: {detail}"
    return ModelgateError(kind, detail, retry_after=retry_after)
