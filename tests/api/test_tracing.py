"""Traces reach a real OTLP receiver, linked to the client's trace, over REST and gRPC.

The receiver is a grpc.aio server implementing OpenTelemetry's ``TraceService`` on
127.0.0.1, started by the test; modelgate exports to it with the SDK's OTLP/gRPC exporter,
as it would to a collector.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from pydantic import SecretStr
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "trace-test-admin-key-0123456789"
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/doubler/infer"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP trace receiver that keeps every span it is sent, with its resource."""

    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.resources: list[dict[str, Any]] = []

    async def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the proto's name)
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
                self.resources.extend(attributes for _ in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    collector = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield collector, port
    await server.stop(None)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def traced_server(
    receiver: tuple[Receiver, int], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    _, port = receiver
    async with running_server(
        Path(tmp_path_factory.mktemp("traced")),
        auth="required",
        admin_key=SecretStr(ADMIN),
        otlp_endpoint=f"http://127.0.0.1:{port}",
        trace_service_name="modelgate-under-test",
    ) as server:
        yield server


def _client_context() -> tuple[str, bytes, bytes]:
    """A client's sampled ``traceparent``, with its trace id and span id."""
    trace_id, span_id = os.urandom(16), os.urandom(8)
    return f"00-{trace_id.hex()}-{span_id.hex()}-01", trace_id, span_id


async def _spans_of(server: Server, receiver: Receiver, trace_id: bytes) -> list[trace_pb2.Span]:
    """The trace's spans, once the server has exported them (the flush blocks: a thread)."""
    assert server.components is not None and server.components.tracer is not None
    assert await asyncio.to_thread(server.components.tracer.flush)
    return [s for s in receiver.spans if s.trace_id == trace_id]


def _assert_linked(spans: list[trace_pb2.Span], client_span_id: bytes, name: str) -> None:
    """client -> the request's server span -> authenticate, admission, queue, runtime."""
    by_name = {s.name: s for s in spans}
    request = by_name[name]
    assert request.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert request.parent_span_id == client_span_id
    for child in ("authenticate", "admission", "queue", "runtime"):
        assert by_name[child].parent_span_id == request.span_id, child
        assert request.start_time_unix_nano <= by_name[child].start_time_unix_nano
        assert by_name[child].end_time_unix_nano <= request.end_time_unix_nano
    queue, runtime = by_name["queue"], by_name["runtime"]
    assert queue.end_time_unix_nano <= runtime.start_time_unix_nano
    attributes = {a.key: a.value for a in runtime.attributes}
    assert attributes["modelgate.model"].string_value == "doubler"
    assert attributes["modelgate.batch_size"].int_value >= 1


async def test_rest_spans_continue_the_clients_trace(
    traced_server: Server, receiver: tuple[Receiver, int]
) -> None:
    collector, _ = receiver
    traceparent, trace_id, span_id = _client_context()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{traced_server.http_port}") as http:
        response = await http.post(
            INFER,
            json=ROW,
            headers={
                "Authorization": f"Bearer {ADMIN}",
                "traceparent": traceparent,
                "X-Request-Id": "client-chosen-id-1",
            },
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "client-chosen-id-1"

    spans = await _spans_of(traced_server, collector, trace_id)
    _assert_linked(spans, span_id, "POST /v2/models/{model}/infer")
    request = next(s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER)
    attributes = {a.key: a.value for a in request.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["http.route"].string_value == "/v2/models/{model}/infer"
    assert attributes["modelgate.request_id"].string_value == "client-chosen-id-1"
    assert attributes["modelgate.model_version"].string_value == "2"  # the latest
    resource = collector.resources[collector.spans.index(request)]
    assert resource["service.name"] == "modelgate-under-test"
    assert all(ADMIN not in str(s) for s in spans)  # no credential in any attribute


async def test_grpc_spans_continue_the_clients_trace(
    traced_server: Server, receiver: tuple[Receiver, int]
) -> None:
    collector, _ = receiver
    traceparent, trace_id, span_id = _client_context()
    request = service_pb2.ModelInferRequest(model_name="doubler")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{traced_server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = (("authorization", f"Bearer {ADMIN}"), ("traceparent", traceparent))
        await stub.ModelInfer(request, metadata=metadata)

    spans = await _spans_of(traced_server, collector, trace_id)
    _assert_linked(spans, span_id, "inference.GRPCInferenceService/ModelInfer")
    server_span = next(s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER)
    attributes = {a.key: a.value for a in server_span.attributes}
    assert attributes["rpc.system"].string_value == "grpc"
    assert attributes["rpc.grpc.status_code"].int_value == 0


async def test_a_grpc_streams_requests_are_children_of_the_streams_span(
    traced_server: Server, receiver: tuple[Receiver, int]
) -> None:
    collector, _ = receiver
    traceparent, trace_id, span_id = _client_context()
    request = service_pb2.ModelInferRequest(model_name="doubler")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])

    async def requests() -> AsyncIterator[Any]:
        yield request

    async with grpc.aio.insecure_channel(f"127.0.0.1:{traced_server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = (("authorization", f"Bearer {ADMIN}"), ("traceparent", traceparent))
        answers = [a async for a in stub.ModelStreamInfer(requests(), metadata=metadata)]
    assert len(answers) == 1 and not answers[0].error_message

    spans = await _spans_of(traced_server, collector, trace_id)
    _assert_linked(spans, span_id, "inference.GRPCInferenceService/ModelStreamInfer")


async def test_a_refused_request_is_an_error_in_its_own_span_only(
    traced_server: Server, receiver: tuple[Receiver, int]
) -> None:
    """A wrong key: the authenticate span failed, the request span says 401 (the client's
    fault, so not an error of the server), and nothing ran."""
    collector, _ = receiver
    traceparent, trace_id, span_id = _client_context()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{traced_server.http_port}") as http:
        response = await http.post(
            INFER, json=ROW, headers={"Authorization": "Bearer nope", "traceparent": traceparent}
        )
    assert response.status_code == 401

    spans = {s.name: s for s in await _spans_of(traced_server, collector, trace_id)}
    assert set(spans) == {"POST /v2/models/{model}/infer", "authenticate"}
    assert spans["authenticate"].status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert spans["POST /v2/models/{model}/infer"].status.code != trace_pb2.Status.STATUS_CODE_ERROR
    assert spans["POST /v2/models/{model}/infer"].parent_span_id == span_id


async def test_a_client_that_does_not_sample_is_not_traced(
    traced_server: Server, receiver: tuple[Receiver, int]
) -> None:
    collector, _ = receiver
    trace_id, span_id = os.urandom(16), os.urandom(8)
    traceparent = f"00-{trace_id.hex()}-{span_id.hex()}-00"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{traced_server.http_port}") as http:
        response = await http.post(
            INFER,
            json=ROW,
            headers={"Authorization": f"Bearer {ADMIN}", "traceparent": traceparent},
        )
    assert response.status_code == 200
    assert await _spans_of(traced_server, collector, trace_id) == []


async def test_without_a_client_context_a_new_trace_starts(
    traced_server: Server, receiver: tuple[Receiver, int]
) -> None:
    collector, _ = receiver
    before = len(collector.spans)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{traced_server.http_port}") as http:
        response = await http.get("/v2/health/ready")
    assert response.status_code == 200
    assert traced_server.components is not None and traced_server.components.tracer is not None
    assert await asyncio.to_thread(traced_server.components.tracer.flush)
    ready = [s for s in collector.spans[before:] if s.name == "GET /v2/health/ready"]
    assert len(ready) == 1 and ready[0].parent_span_id == b""


async def test_a_gateways_trace_continues_on_the_node_it_forwards_to(
    receiver: tuple[Receiver, int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """client -> gateway's request span -> node's gRPC span -> the node's runtime spans:
    one trace across two servers, linked through the ``traceparent`` the gateway sends."""
    collector, port = receiver
    endpoint = f"http://127.0.0.1:{port}"
    node_key = "trace-node-key-0123456789abcdef"
    async with (
        running_server(
            Path(tmp_path_factory.mktemp("node")),
            role="node",
            auth="required",
            admin_key=SecretStr(node_key),
            otlp_endpoint=endpoint,
            trace_service_name="node-under-test",
        ) as node,
        running_server(
            Path(tmp_path_factory.mktemp("gateway")),
            role="gateway",
            nodes=f"127.0.0.1:{node.grpc_port}",
            node_key=SecretStr(node_key),
            node_key_nodes="*",  # a modelgate node: sent the key
            auth="required",
            admin_key=SecretStr(ADMIN),
            otlp_endpoint=endpoint,
            trace_service_name="gateway-under-test",
        ) as gateway,
    ):
        traceparent, trace_id, span_id = _client_context()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as c:
            answer = await c.post(
                INFER,
                json=ROW,
                headers={"authorization": f"Bearer {ADMIN}", "traceparent": traceparent},
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
        await _spans_of(gateway, collector, trace_id)
        spans = await _spans_of(node, collector, trace_id)
    services = {
        s.span_id: r.get("service.name")
        for s, r in zip(collector.spans, collector.resources, strict=True)
    }
    gateway_request = next(s for s in spans if s.name == "POST /v2/models/{model}/infer")
    assert services[gateway_request.span_id] == "gateway-under-test"
    assert gateway_request.parent_span_id == span_id
    node_request = next(s for s in spans if s.name.endswith("/ModelInfer"))
    assert services[node_request.span_id] == "node-under-test"
    assert node_request.parent_span_id == gateway_request.span_id
    node_runtime = [
        s for s in spans if s.name == "runtime" and services[s.span_id] == "node-under-test"
    ]
    assert node_runtime and node_runtime[0].parent_span_id == node_request.span_id


async def test_the_cache_lookup_and_the_deployments_pick_are_spans_of_the_request(
    traced_server: Server, receiver: tuple[Receiver, int]
) -> None:
    collector, _ = receiver
    base = f"http://127.0.0.1:{traced_server.http_port}"
    auth = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base, headers=auth) as client:
        split = {
            "default_version": 2,
            "split": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
        }
        answer = await client.put("/admin/models/doubler/deployment", json=split)
        assert answer.status_code == 200, answer.text
        try:
            traceparent, trace_id, _ = _client_context()
            routed = await client.post(INFER, json=ROW, headers={"traceparent": traceparent})
            assert routed.status_code == 200, routed.text
            spans = await _spans_of(traced_server, collector, trace_id)
            by_name = {s.name: s for s in spans}
            route = by_name["route"]
            assert route.parent_span_id == by_name["POST /v2/models/{model}/infer"].span_id
            attributes = {a.key: a.value.string_value for a in route.attributes}
            assert attributes["modelgate.model_version"] == routed.json()["model_version"]
            assert attributes["modelgate.deployment_variant"] == "split"
        finally:
            await client.post("/admin/models/doubler/deployment/rollback")
        traceparent, trace_id, _ = _client_context()
        cached = await client.post(
            "/v2/models/cached-doubler/infer", json=ROW, headers={"traceparent": traceparent}
        )
        assert cached.status_code == 200, cached.text
        spans = await _spans_of(traced_server, collector, trace_id)
        by_name = {s.name: s for s in spans}
        assert by_name["cache"].parent_span_id == by_name["POST /v2/models/{model}/infer"].span_id


async def test_a_data_subjects_id_is_not_in_the_span_of_a_subject_route(
    traced_server: Server, receiver: tuple[Receiver, int]
) -> None:
    """A trace store outlives an erasure, so the subject routes' spans carry the path with
    the id replaced, as the request log writes it (privacy.md)."""
    collector, _ = receiver
    traceparent, trace_id, _ = _client_context()
    subject = "subject-in-trace@example.com"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{traced_server.http_port}") as http:
        response = await http.get(
            f"/admin/subjects/{subject}/export",
            headers={"Authorization": f"Bearer {ADMIN}", "traceparent": traceparent},
        )
    assert response.status_code < 500, response.text
    spans = await _spans_of(traced_server, collector, trace_id)
    paths = [a.value.string_value for s in spans for a in s.attributes if a.key == "url.path"]
    assert paths == ["/admin/subjects/{subject}/export"]
    assert all(subject not in str(s) for s in spans)
