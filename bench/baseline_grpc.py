"""Baseline B: the smallest ``grpc.aio`` server of credit-risk's ``ModelInfer``.

Same stubs as modelgate (``tritonclient.grpc``), the same ``model.onnx`` run inline,
``raw_input_contents`` in and ``raw_output_contents`` out. No validation.

    python -m bench.baseline_grpc --port 9001 --model build/models/credit-risk/2/model.onnx
"""

# ruff: noqa: N802 - the servicer's method names are the proto's

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
from tritonclient.grpc import service_pb2, service_pb2_grpc

_OUTPUTS = (("label", "INT64"), ("probabilities", "FP32"))


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, model: str, version: str):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.version = version

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        tensor = request.inputs[0]
        features = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(
            tuple(tensor.shape)
        )
        arrays = self.session.run([n for n, _ in _OUTPUTS], {tensor.name: features})
        response = service_pb2.ModelInferResponse(
            model_name=request.model_name, model_version=self.version, id=request.id
        )
        for (name, datatype), array in zip(_OUTPUTS, arrays, strict=True):
            response.outputs.add(name=name, datatype=datatype, shape=array.shape)
            response.raw_output_contents.append(array.tobytes())
        return response


async def serve(port: int, model: str, version: str) -> None:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(model, version), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"baseline gRPC ready on {port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as modelgate does")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.port, args.model, args.version))
    else:
        asyncio.run(serve(args.port, args.model, args.version))


if __name__ == "__main__":
    main()
