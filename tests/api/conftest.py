"""A real in-process server and one protocol-neutral client per protocol (REST, gRPC).

The same test cases run through :class:`RestClient` and :class:`GrpcClient`, which expose
the same methods and raise the same :class:`ProtocolError`, so a behaviour that differs
between the protocols fails one of the two parametrizations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import pytest_asyncio
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.serving.tensors import datatype_of, numpy_dtype
from modelgate.server import Server
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

# REST status / gRPC code -> one neutral code.
_REST_CODES = {
    400: "invalid",
    404: "not_found",
    409: "failed_precondition",
    413: "too_large",
    500: "internal",
    501: "unsupported",
    503: "unavailable",
}
_GRPC_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "too_large",
    grpc.StatusCode.INTERNAL: "internal",
    grpc.StatusCode.UNIMPLEMENTED: "unsupported",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
}


class ProtocolError(Exception):
    """An error answer, whatever the protocol: ``code`` is e.g. "invalid", "not_found"."""

    def __init__(self, code: str, message: str, retry_after: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


@contextlib.asynccontextmanager
async def running_server(data_dir: Path, **overrides: Any) -> AsyncIterator[Server]:
    """A :class:`Server` on ephemeral ports serving the fixture models, stopped on exit."""
    # Protocol behaviour is tested without access control; it has suites of its own
    # (test_access_control.py, test_admin_api.py).
    settings = Settings(
        data_dir=data_dir,
        http_port=0,
        grpc_port=0,
        log_level="warning",
        **{"auth": "off", "model_repository": FIXTURE_MODELS, **overrides},
    )
    server = Server(settings)
    task = asyncio.create_task(server.serve())
    started = asyncio.create_task(server.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        task.result()  # raises the start-up error
    try:
        yield server
    finally:
        server.request_stop()
        await asyncio.wait_for(task, 30)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(tmp_path_factory.mktemp("data")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def grpc_channel(server: Server) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def grpc_stub(grpc_channel: grpc.aio.Channel) -> Any:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc_channel)


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["rest", "grpc"])
async def client(
    request: pytest.FixtureRequest, server: Server
) -> AsyncIterator[RestClient | GrpcClient]:
    if request.param == "rest":
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.http_port}", timeout=30
        ) as http:
            yield RestClient(http)
    else:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            yield GrpcClient(service_pb2_grpc.GRPCInferenceServiceStub(channel))


def _to_numpy(datatype: str, shape: list[int], values: Any) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = [v.encode() if isinstance(v, str) else v for v in values]
        return array.reshape(shape)
    return np.array(values, dtype=numpy_dtype(datatype)).reshape(shape)


def _length_prefixed(array: np.ndarray[Any, Any]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1))


def _split_length_prefixed(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items


class RestClient:
    """OIP v2 REST through httpx: JSON, or binary tensor data when asked or when JSON cannot
    carry the values (NaN and Infinity)."""

    protocol = "rest"

    def __init__(self, http: httpx.AsyncClient):
        self.http = http

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400 and not path.endswith("/ready"):
            raise ProtocolError(
                _REST_CODES.get(response.status_code, str(response.status_code)),
                response.json()["error"],
                response.headers.get("retry-after"),
            )
        return response

    async def live(self) -> bool:
        return bool((await self._call("GET", "/v2/health/live")).json()["live"])

    async def ready(self) -> bool:
        return bool((await self._call("GET", "/v2/health/ready")).json()["ready"])

    async def server_metadata(self) -> dict[str, Any]:
        return dict((await self._call("GET", "/v2")).json())

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/ready"
        response = await self._call("GET", path)
        if response.status_code == 404:
            raise ProtocolError("not_found", response.json()["error"])
        return bool(response.json()["ready"])

    async def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "")
        doc = (await self._call("GET", path)).json()
        for tensor in doc["inputs"] + doc["outputs"]:
            tensor.pop("parameters", None)
        return {k: doc[k] for k in ("name", "versions", "platform", "inputs", "outputs")}

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray[Any, Any]],
        *,
        version: str | None = None,
        outputs: list[str] | None = None,
        classification: int | None = None,
        shapes: dict[str, list[int]] | None = None,
        binary: bool = False,
    ) -> dict[str, np.ndarray[Any, Any]]:
        shapes = shapes or {}
        entries: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for name, array in inputs.items():
            datatype = datatype_of(array)
            entry: dict[str, Any] = {
                "name": name,
                "datatype": datatype,
                "shape": shapes.get(name, list(array.shape)),
            }
            nonfinite = array.dtype.kind == "f" and not np.isfinite(array).all()
            if binary or nonfinite:
                raw = _length_prefixed(array) if datatype == "BYTES" else array.tobytes()
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            elif datatype == "BYTES":
                entry["data"] = [v.decode() for v in array.reshape(-1)]
            else:
                entry["data"] = array.reshape(-1).tolist()
            entries.append(entry)
        doc: dict[str, Any] = {"inputs": entries}
        if outputs is not None:
            params = {"classification": classification} if classification else {}
            doc["outputs"] = [{"name": o, "parameters": params} for o in outputs]
        header = json.dumps(doc).encode()
        headers = {"content-type": "application/json"}
        if chunks:
            headers = {
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(header)),
            }
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        response = await self._call(
            "POST", path, content=b"".join([header, *chunks]), headers=headers
        )
        body = response.json()
        assert body["model_name"] == model
        return {o["name"]: _to_numpy(o["datatype"], o["shape"], o["data"]) for o in body["outputs"]}

    async def load(self, name: str, config: dict[str, Any] | None = None) -> None:
        body = {"parameters": {"config": json.dumps(config)}} if config else {}
        await self._call("POST", f"/v2/repository/models/{name}/load", json=body)

    async def unload(self, name: str) -> None:
        await self._call("POST", f"/v2/repository/models/{name}/unload")

    async def index(self) -> list[dict[str, str]]:
        rows = (await self._call("POST", "/v2/repository/index")).json()
        return [{k: r.get(k, "") for k in ("name", "version", "state")} for r in rows]

    async def stats(self, name: str) -> dict[str, dict[str, int]]:
        doc = (await self._call("GET", f"/v2/models/{name}/stats")).json()
        return {
            s["version"]: {
                "inference_count": s["inference_count"],
                "success": s["inference_stats"]["success"]["count"],
                "fail": s["inference_stats"]["fail"]["count"],
            }
            for s in doc["model_stats"]
        }


class GrpcClient:
    """``inference.GRPCInferenceService`` through grpc.aio with typed ``contents`` (the raw
    path is covered by tritonclient and test_grpc_specific)."""

    protocol = "grpc"

    def __init__(self, stub: Any):
        self.stub = stub

    async def _call(self, method: str, message: Any) -> Any:
        try:
            return await getattr(self.stub, method)(message)
        except grpc.aio.AioRpcError as exc:
            retry_after = dict(exc.trailing_metadata() or ()).get("retry-after")
            raise ProtocolError(
                _GRPC_CODES.get(exc.code(), str(exc.code())), exc.details() or "", retry_after
            ) from None

    async def live(self) -> bool:
        return bool((await self._call("ServerLive", service_pb2.ServerLiveRequest())).live)

    async def ready(self) -> bool:
        return bool((await self._call("ServerReady", service_pb2.ServerReadyRequest())).ready)

    async def server_metadata(self) -> dict[str, Any]:
        meta = await self._call("ServerMetadata", service_pb2.ServerMetadataRequest())
        return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        request = service_pb2.ModelReadyRequest(name=name, version=version or "")
        return bool((await self._call("ModelReady", request)).ready)

    async def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        request = service_pb2.ModelMetadataRequest(name=name, version=version or "")
        meta = await self._call("ModelMetadata", request)

        def tensors(items: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

        return {
            "name": meta.name,
            "versions": list(meta.versions),
            "platform": meta.platform,
            "inputs": tensors(meta.inputs),
            "outputs": tensors(meta.outputs),
        }

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray[Any, Any]],
        *,
        version: str | None = None,
        outputs: list[str] | None = None,
        classification: int | None = None,
        shapes: dict[str, list[int]] | None = None,
        binary: bool = False,  # REST only; gRPC has one encoding per client
    ) -> dict[str, np.ndarray[Any, Any]]:
        shapes = shapes or {}
        request = service_pb2.ModelInferRequest(model_name=model, model_version=version or "")
        for name, array in inputs.items():
            datatype = datatype_of(array)
            item = request.inputs.add(
                name=name, datatype=datatype, shape=shapes.get(name, list(array.shape))
            )
            flat = array.reshape(-1).tolist()
            field = {
                "FP32": "fp32_contents",
                "FP64": "fp64_contents",
                "INT32": "int_contents",
                "INT64": "int64_contents",
                "BYTES": "bytes_contents",
                "BOOL": "bool_contents",
            }[datatype]
            getattr(item.contents, field).extend(flat)
        for name in outputs or ():
            output = request.outputs.add(name=name)
            if classification:
                output.parameters["classification"].int64_param = classification
        response = await self._call("ModelInfer", request)
        assert response.model_name == model
        result: dict[str, np.ndarray[Any, Any]] = {}
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
            if output.datatype == "BYTES":
                values: Any = _split_length_prefixed(raw)
                result[output.name] = _to_numpy("BYTES", list(output.shape), values)
            else:
                dtype = numpy_dtype(output.datatype).newbyteorder("<")
                result[output.name] = np.frombuffer(raw, dtype).reshape(list(output.shape))
        return result

    async def load(self, name: str, config: dict[str, Any] | None = None) -> None:
        request = service_pb2.RepositoryModelLoadRequest(model_name=name)
        if config:
            request.parameters["config"].string_param = json.dumps(config)
        await self._call("RepositoryModelLoad", request)

    async def unload(self, name: str) -> None:
        await self._call(
            "RepositoryModelUnload", service_pb2.RepositoryModelUnloadRequest(model_name=name)
        )

    async def index(self) -> list[dict[str, str]]:
        response = await self._call("RepositoryIndex", service_pb2.RepositoryIndexRequest())
        return [{"name": m.name, "version": m.version, "state": m.state} for m in response.models]

    async def stats(self, name: str) -> dict[str, dict[str, int]]:
        response = await self._call(
            "ModelStatistics", service_pb2.ModelStatisticsRequest(name=name)
        )
        return {
            s.version: {
                "inference_count": s.inference_count,
                "success": s.inference_stats.success.count,
                "fail": s.inference_stats.fail.count,
            }
            for s in response.model_stats
        }
