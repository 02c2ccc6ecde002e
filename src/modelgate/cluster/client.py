"""The gateway's OIP gRPC client to its nodes (a modelgate node, Triton, MLServer, KServe).

Connections to a node are kept open, each carrying at most ``max_streams_per_connection``
calls at once: a gRPC server refuses the streams over its ``grpc.max_concurrent_streams``
(RST_STREAM REFUSED_STREAM; grpc's client does not queue them), and a gateway sends a
node all its callers' calls, so it opens another connection to the node instead (each
channel its own, not grpc's shared subchannel). Every call has a timeout (the time
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
from modelgate.core.gateway.nodes import NodeAnswer, NodeInfo
from modelgate.core.serving.tensors import datatype_of
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


#: what grpc says of a call whose connection to the node broke (the node died or restarted,
#: or the network reset it) in the status's details, whatever code it picked: grpc core
#: reports UNAVAILABLE ("Stream removed", "Socket closed", "recvmsg:Connection reset by
#: peer (104)", "failed to connect to all addresses", "GOAWAY received", "keepalive
#: watchdog timeout"), INTERNAL ("Received RST_STREAM with error code 2") or, in older
#: versions, UNKNOWN ("Stream removed"). Matched lower-cased.
_TRANSPORT_WORDS = (
    "stream removed",
    "socket closed",
    "connection reset",
    "connection refused",
    "connection closed",
    "broken pipe",
    "rst_stream",
    "goaway",
    "failed to connect",
    "end of tcp stream",
    "keepalive",
    "transport",
    "endpoint closing",
)


#: RST_STREAM with REFUSED_STREAM (HTTP/2 error code 7): the node refused the stream before
#: reading it (more streams than its ``grpc.max_concurrent_streams`` on the connection)
_REFUSED = "error code 7"


def refused_stream(code: grpc.StatusCode, details: str | None) -> bool:
    """Whether the node refused the call unread (RFC 9113: "the stream was refused before
    any application processing"): safe to send again anywhere, and no sign of a broken
    node."""
    text = (details or "").lower()
    return code is grpc.StatusCode.UNAVAILABLE and "rst_stream" in text and _REFUSED in text


def classify_status(code: grpc.StatusCode, details: str | None) -> tuple[ErrorKind, bool]:
    """A node's gRPC status as an error kind, and whether the call died with its connection
    (a transport failure: UNAVAILABLE, which the cluster retries on another node, as it
    does a refused connection; the node may have run the call, and inference is
    idempotent). CANCELLED is never the caller's own here: a cancelled caller's task ends
    in ``asyncio.CancelledError`` before any status, so CANCELLED came from the node or
    the connection."""
    if code is grpc.StatusCode.CANCELLED:
        return ErrorKind.UNAVAILABLE, True
    text = (details or "").lower()
    broken = any(word in text for word in _TRANSPORT_WORDS)
    if code is grpc.StatusCode.UNAVAILABLE or (
        broken and code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    ):
        return ErrorKind.UNAVAILABLE, broken  # unreachable, or the node not ready: retried
    return _KINDS.get(code, ErrorKind.INTERNAL), False


class _Connection:
    __slots__ = ("calls", "channel", "stub")

    def __init__(self, channel: Any):
        self.channel = channel
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        self.calls = 0  # in flight now


class GrpcNodeClient:
    def __init__(
        self,
        *,
        credential: str | None = None,
        uncredentialed: frozenset[str] = frozenset(),
        max_message_bytes: int = 64 * 1024 * 1024,
        max_elements: int = 16 * 1024 * 1024,
        root_certificates: bytes | None = None,
        max_streams_per_connection: int = 100,
        max_connections_per_node: int = 32,
    ):
        self._credential = (("authorization", f"Bearer {credential}"),) if credential else ()
        #: addresses of nodes not known to be modelgate nodes: sent no credential
        self._uncredentialed = uncredentialed
        self._max_elements = max_elements
        self._per_connection = max_streams_per_connection
        self._max_connections = max_connections_per_node
        self._options = [
            # a channel of its own: channels with equal options would share one connection
            ("grpc.use_local_subchannel_pool", 1),
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
        self._pools: dict[str, list[_Connection]] = {}

    def _connection(self, address: str) -> _Connection:
        """The first of the node's connections with room for a call, a new one when none
        has (up to ``max_connections_per_node``; then the least busy)."""
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = []
        for connection in pool:
            if connection.calls < self._per_connection:
                return connection
        if len(pool) >= self._max_connections:
            return min(pool, key=lambda c: c.calls)
        if self._root is not None:
            credentials = grpc.ssl_channel_credentials(self._root)
            channel = grpc.aio.secure_channel(address, credentials, options=self._options)
        else:
            channel = grpc.aio.insecure_channel(address, options=self._options)
        connection = _Connection(channel)
        pool.append(connection)
        return connection

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
            model_version=node.version_label(model, version),
            inputs=tensors,
            raw_input_contents=raw,
        )
        credential = () if node.address in self._uncredentialed else self._credential
        metadata = (*credential, *headers.items())
        connection = self._connection(node.address)
        connection.calls += 1
        started = time.monotonic()
        try:
            response = await connection.stub.ModelInfer(
                request, timeout=timeout_s, metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise _error(node, exc, time.monotonic() - started >= timeout_s * 0.95) from None
        finally:
            connection.calls -= 1
        parameters = decode_parameters(response.parameters) if response.parameters else {}
        # the node's cache is not the gateway's, nor is its word on its region: the gateway
        # says its own (core/gateway/cluster.py names the region it validated for the node)
        parameters.pop("cache", None)
        parameters.pop("region", None)
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
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            for connection in pool:
                await connection.channel.close(grace=None)


def _error(node: NodeInfo, exc: Any, timed_out: bool) -> ModelgateError:
    code = exc.code()
    kind, transport = classify_status(code, exc.details())
    retry_after = None
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after":
            kind = ErrorKind.OVERLOADED  # the node's queue is full (UNAVAILABLE + Retry-After)
            transport = False
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
        detail = f"node {node.id}: {detail}"  # for the gateway's log (see Cluster)
    details: dict[str, bool] = {"transport": True} if transport else {}
    if refused_stream(code, exc.details()):
        details["refused"] = True
    return ModelgateError(kind, detail, retry_after=retry_after, details=details)
