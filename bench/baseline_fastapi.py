"""Baseline A: the smallest FastAPI app that serves credit-risk's OIP JSON infer inline.

Run by ``bench`` as ``uvicorn bench.baseline_fastapi:app --http httptools --loop uvloop``
with ``BENCH_ONNX_MODEL`` naming the same ``model.onnx`` modelgate serves. No validation.
"""

import os

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request, Response

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(
    os.environ["BENCH_ONNX_MODEL"], options, providers=["CPUExecutionProvider"]
)
VERSION = os.environ.get("BENCH_MODEL_VERSION", "1")
app = FastAPI()


@app.get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    tensor = orjson.loads(await request.body())["inputs"][0]
    features = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    label, probabilities = session.run(["label", "probabilities"], {tensor["name"]: features})
    outputs = [
        {"name": "label", "datatype": "INT64", "shape": list(label.shape), "data": label},
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": list(probabilities.shape),
            "data": probabilities.reshape(-1),
        },
    ]
    body = {"model_name": name, "model_version": VERSION, "outputs": outputs}
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )
