"""The KServe Python SDK (``kserve``) calling modelgate, as its users call KServe.

Run by tests/e2e/test_kserve_sdk.py with the interpreter of a separate virtual environment
that holds the SDK (it pins its own FastAPI, Starlette and protobuf, which modelgate's
environment does not share). Arguments: REST base URL, gRPC address, API key. Prints one
JSON document of what each call answered; the test judges it.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

ROWS = np.array(
    [
        [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1],
        [0, 21000, 0.9, 0.1, 22, 0, 3, 9000, 60, 2, 0, 0],
    ],
    np.float32,
)


def request(binary: bool) -> InferRequest:
    features = InferInput("features", list(ROWS.shape), "FP32")
    features.set_data_from_numpy(ROWS, binary_data=binary)
    return InferRequest("credit-risk", [features], request_id="kserve-sdk")


def outputs(response: object) -> dict[str, list[object]]:
    return {o.name: o.as_numpy().tolist() for o in response.outputs}  # type: ignore[attr-defined]


async def main(base_url: str, grpc_address: str, key: str) -> dict[str, object]:
    headers = {"authorization": f"Bearer {key}"}
    found: dict[str, object] = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    found["rest_server_ready"] = await rest.is_server_ready(base_url, headers=headers)
    found["rest_model_ready"] = await rest.is_model_ready(base_url, "credit-risk", headers=headers)
    for binary in (False, True):
        answer = await rest.infer(base_url, request(binary), "credit-risk", headers=headers)
        found[f"rest_binary_{binary}"] = outputs(answer)
    await rest.close()
    async with InferenceGRPCClient(grpc_address, timeout=30, retries=0) as grpc_client:
        metadata = (("authorization", f"Bearer {key}"),)
        found["grpc_server_ready"] = await grpc_client.is_server_ready(headers=metadata)
        ready = await grpc_client.is_model_ready("credit-risk", headers=metadata)
        found["grpc_model_ready"] = ready
        answer = await grpc_client.infer(request(binary=False), headers=metadata)
        found["grpc"] = outputs(answer)
    return found


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
