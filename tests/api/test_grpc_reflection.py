"""gRPC server reflection, as grpcurl, Postman and Evans use it: the services are listed and
ModelInfer's messages resolved without .proto files; off with ``grpc_reflection=False``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")


def reflect(port: int) -> dict[str, Any]:
    """What a reflection client learns (blocking: run in a thread beside the server's loop)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        pool = DescriptorPool(database)
        service = pool.FindServiceByName("inference.GRPCInferenceService")
        infer = service.methods_by_name["ModelInfer"]
        check = pool.FindServiceByName("grpc.health.v1.Health").methods_by_name["Check"]
        return {
            "services": services,
            "infer": (infer.input_type.full_name, infer.output_type.full_name),
            "infer_fields": [f.name for f in infer.input_type.fields],
            "check": check.output_type.full_name,
        }


async def test_reflection_lists_the_services_and_resolves_model_infer(server: Server) -> None:
    found = await asyncio.to_thread(reflect, server.grpc_port)
    assert found["services"] == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "inference.GRPCInferenceService",
    ]
    assert found["infer"] == ("inference.ModelInferRequest", "inference.ModelInferResponse")
    assert {"model_name", "inputs", "raw_input_contents"} <= set(found["infer_fields"])
    assert found["check"] == "grpc.health.v1.HealthCheckResponse"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def without_reflection(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    data: Path = tmp_path_factory.mktemp("no-reflection")
    async with running_server(data, grpc_reflection=False) as running:
        yield running


async def test_reflection_can_be_turned_off(without_reflection: Server) -> None:
    with pytest.raises(grpc.RpcError) as info:
        await asyncio.to_thread(reflect, without_reflection.grpc_port)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
