"""What the benchmarks send: the credit-risk row, the 16-token sentences, and their OIP JSON,
OpenAI and gRPC encodings; plus the models' default versions as modelgate resolves them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

__all__ = [
    "CREDIT_ROW",
    "SENTENCES",
    "ModelFiles",
    "credit_json",
    "embeddings_json",
    "grpc_frame",
    "grpc_request",
    "model_files",
    "sentence_json",
]

CREDIT = "credit-risk"
MINILM = "all-MiniLM-L6-v2"

# One realistic applicant: the 12 features in manifest order.
CREDIT_ROW = [2.0, 55000.0, 0.3, 0.4, 36.0, 5.0, 0.0, 12000.0, 36.0, 8.0, 1.0, 1.0]

# Each is exactly 16 tokens with [CLS] and [SEP] (checked by bench.raw at run time), so every
# batch, merged or not, has the same padded length.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A model server should answer requests quickly when many clients connect at once.",
    "Our team measured the latency of every request on a virtual machine.",
    "Sentence embeddings map short texts to vectors for semantic search.",
    "The weather today is sunny with a light breeze coming from the west.",
    "She ordered a cup of coffee and read the paper by the window.",
    "Batching many small requests together keeps the busy processor efficient and cool.",
    "The library closes early on holidays, so plan your visit in advance.",
]
SENTENCE_TOKENS = 16


@dataclass(frozen=True)
class ModelFiles:
    """A model's default version as modelgate serves it (manifest + folder)."""

    name: str
    version: int
    path: Path
    onnx: Path
    manifest: Any
    source: Any


#: modelgate runs with access control on, as in production: every request carries this key
#: (the bootstrap key, MODELGATE_ADMIN_KEY); the baselines get the same header and ignore it.
BENCH_KEY = "bench-admin-key-0123456789abcdef"
AUTHORIZATION = f"Bearer {BENCH_KEY}"


def model_files(models: Path, name: str) -> ModelFiles:
    from modelgate.repository.filesystem import FileModelRepository

    sources = FileModelRepository(str(models)).versions(name)
    default = sources[-1].manifest.default_version
    source = next((s for s in sources if s.version == default), sources[-1])
    path = Path(source.path)
    return ModelFiles(
        name, source.version, path, path / source.manifest.artifact, source.manifest, source
    )


def credit_json(rows: int = 1) -> bytes:
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [rows, 12],
                    "data": [CREDIT_ROW] * rows,
                }
            ]
        }
    )


def sentence_json(sentence: str) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [sentence]}]}
    )


def embeddings_json(sentence: str) -> bytes:
    return orjson.dumps({"model": MINILM, "input": sentence})


def grpc_request() -> Any:
    from tritonclient.grpc import service_pb2

    features = np.asarray([CREDIT_ROW], dtype="<f4")
    return service_pb2.ModelInferRequest(
        model_name=CREDIT,
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name="features", datatype="FP32", shape=list(features.shape)
            )
        ],
        raw_input_contents=[features.tobytes()],
    )


def grpc_frame(message: Any) -> bytes:
    """A gRPC length-prefixed message: flag 0 (uncompressed), 4-byte big-endian length."""
    payload: bytes = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload
