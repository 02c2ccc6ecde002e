"""gRPC-only behaviour: raw tensor contents, message limits, streaming, health, config."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

Stub = Any


def raw_request(model: str, inputs: list[tuple[str, str, list[int], bytes]], **fields: Any) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, **fields)
    for name, datatype, shape, raw in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


def length_prefixed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


async def expect_status(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value.details() or ""


async def test_raw_fp32_input_and_raw_outputs(grpc_stub: Stub) -> None:
    x = np.arange(8, dtype="<f4").reshape(2, 4)
    request = raw_request(
        "doubler", [("x", "FP32", [2, 4], x.tobytes())], id="req-7", model_version="1"
    )
    response = await grpc_stub.ModelInfer(request)
    assert (response.model_name, response.model_version, response.id) == ("doubler", "1", "req-7")
    assert [o.name for o in response.outputs] == ["y", "scores"]
    assert list(response.outputs[0].shape) == [2, 4]
    assert response.outputs[0].datatype == "FP32"
    assert not response.outputs[0].HasField("contents")
    y = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(2, 4)
    np.testing.assert_array_equal(y, x * 2)


async def test_raw_bytes_input_with_length_prefixes(grpc_stub: Stub) -> None:
    items = [b"ab", b"", b"xyz\x00q"]
    request = raw_request("echo-text", [("text", "BYTES", [3], length_prefixed(items))])
    response = await grpc_stub.ModelInfer(request)
    by_name = dict(
        zip([o.name for o in response.outputs], response.raw_output_contents, strict=True)
    )
    assert by_name["upper"] == length_prefixed([b"AB", b"", b"XYZ\x00Q"])
    assert np.frombuffer(by_name["length"], "<i8").tolist() == [2, 0, 5]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (length_prefixed([b"ab"])[:-1], "runs past"),
        (length_prefixed([b"ab"]) + b"\x01\x00", "truncated"),
        (length_prefixed([b"a", b"b"]), "2 elements"),
    ],
)
async def test_malformed_raw_bytes_are_invalid(grpc_stub: Stub, raw: bytes, needle: str) -> None:
    request = raw_request("echo-text", [("text", "BYTES", [1], raw)])
    details = await expect_status(grpc_stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert needle in details


async def test_raw_length_must_match_the_shape(grpc_stub: Stub) -> None:
    request = raw_request("doubler", [("x", "FP32", [2, 4], b"\x00" * 16)])
    details = await expect_status(grpc_stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "16 raw bytes" in details and "32" in details


async def test_contents_and_raw_together_are_invalid(grpc_stub: Stub) -> None:
    request = raw_request("doubler", [("x", "FP32", [1, 4], b"\x00" * 16)])
    request.inputs[0].contents.fp32_contents.extend([1, 2, 3, 4])
    details = await expect_status(grpc_stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "raw_input_contents" in details


async def test_raw_buffer_count_must_match_the_inputs(grpc_stub: Stub) -> None:
    request = raw_request("doubler", [("x", "FP32", [1, 4], b"\x00" * 16)])
    request.raw_input_contents.append(b"\x00" * 16)
    details = await expect_status(grpc_stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "2 buffers for 1 inputs" in details


async def test_fp16_has_no_typed_contents(grpc_stub: Stub) -> None:
    request = service_pb2.ModelInferRequest(model_name="doubler")
    request.inputs.add(name="x", datatype="FP16", shape=[1, 4])
    details = await expect_status(grpc_stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "raw_input_contents" in details


async def test_unsupported_rpcs_answer_unimplemented(grpc_stub: Stub) -> None:
    details = await expect_status(
        grpc_stub.SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest()),
        grpc.StatusCode.UNIMPLEMENTED,
    )
    assert "shared memory" in details


async def test_oversized_messages_are_refused(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path, grpc_max_message_bytes=64 * 1024) as server,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{server.grpc_port}",
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
        ) as channel,
    ):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        # 80 KiB in: refused on the way in.
        x = np.ones((20 * 1024, 1), "<f4")
        big = raw_request("doubler", [("x", "FP32", [5120, 4], x.tobytes())])
        await expect_status(stub.ModelInfer(big), grpc.StatusCode.RESOURCE_EXHAUSTED)
        # echo-text (not batched): 36 KiB in, 84 KiB out (upper 36 + length 48).
        text = length_prefixed([b"ab"] * 6000)
        wide = raw_request("echo-text", [("text", "BYTES", [6000], text)])
        await expect_status(stub.ModelInfer(wide), grpc.StatusCode.RESOURCE_EXHAUSTED)
        small = raw_request("echo-text", [("text", "BYTES", [100], text[:600])])
        response = await stub.ModelInfer(small)
        assert list(response.outputs[0].shape) == [100]


async def test_stream_answers_in_order_and_survives_a_bad_request(grpc_stub: Stub) -> None:
    x = np.ones((1, 4), "<f4")
    good = raw_request("doubler", [("x", "FP32", [1, 4], x.tobytes())], id="first")
    bad = raw_request("doubler", [("x", "FP32", [1, 4], b"\x00")], id="second")
    unknown = raw_request("no-such-model", [("x", "FP32", [1, 4], x.tobytes())], id="third")
    again = raw_request("doubler", [("x", "FP32", [1, 4], (x * 2).tobytes())], id="fourth")
    call = grpc_stub.ModelStreamInfer(iter([good, bad, unknown, again]))
    answers = [answer async for answer in call]
    assert [a.infer_response.id for a in answers] == ["first", "second", "third", "fourth"]
    assert [bool(a.error_message) for a in answers] == [False, True, True, False]
    assert "raw bytes" in answers[1].error_message
    assert "unknown model" in answers[2].error_message
    y = np.frombuffer(answers[3].infer_response.raw_output_contents[0], "<f4")
    np.testing.assert_array_equal(y, [6, 6, 6, 6])
    assert await call.code() == grpc.StatusCode.OK


async def test_health_check_is_serving(grpc_channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(grpc_channel)
    for service in ("", "inference.GRPCInferenceService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    await expect_status(
        health.Check(health_pb2.HealthCheckRequest(service="nope")), grpc.StatusCode.NOT_FOUND
    )


async def test_model_config_parses(grpc_stub: Stub) -> None:
    config = (await grpc_stub.ModelConfig(service_pb2.ModelConfigRequest(name="doubler"))).config
    assert config.name == "doubler"
    assert config.max_batch_size == 8
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("x", model_config_pb2.TYPE_FP32, [4])
    ]
    assert [t.name for t in config.output] == ["y", "scores"]
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 64
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    text = (await grpc_stub.ModelConfig(service_pb2.ModelConfigRequest(name="echo-text"))).config
    assert text.max_batch_size == 0
    assert text.input[0].data_type == model_config_pb2.TYPE_STRING
    assert list(text.input[0].dims) == [-1]
    await expect_status(
        grpc_stub.ModelConfig(service_pb2.ModelConfigRequest(name="nope")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_model_statistics_parse(grpc_stub: Stub) -> None:
    x = np.ones((3, 4), "<f4")
    await grpc_stub.ModelInfer(raw_request("doubler", [("x", "FP32", [3, 4], x.tobytes())]))
    response = await grpc_stub.ModelStatistics(service_pb2.ModelStatisticsRequest())
    by_version = {(s.name, s.version): s for s in response.model_stats}
    assert {("doubler", "1"), ("doubler", "2")} <= set(by_version)
    stats = by_version[("doubler", "2")]
    assert stats.inference_count >= 3
    assert stats.inference_stats.success.count >= 1
    assert stats.inference_stats.success.ns > 0
    assert stats.last_inference > 0
    assert any(b.batch_size == 3 for b in stats.batch_stats)
    one = await grpc_stub.ModelStatistics(
        service_pb2.ModelStatisticsRequest(name="doubler", version="1")
    )
    assert [(s.name, s.version) for s in one.model_stats] == [("doubler", "1")]


async def test_many_calls_at_once_on_one_channel_are_all_served(grpc_stub: Stub) -> None:
    """grpc clients do not queue calls past a server's SETTINGS_MAX_CONCURRENT_STREAMS (the
    server refuses them), so one channel running a few hundred calls at once, as a
    tritonclient or perf_analyzer user does, must stay under the default limit."""
    x = np.ones((1, 4), dtype="<f4").tobytes()
    calls = [
        grpc_stub.ModelInfer(raw_request("doubler", [("x", "FP32", [1, 4], x)]), timeout=60)
        for _ in range(400)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, failed[:3]
