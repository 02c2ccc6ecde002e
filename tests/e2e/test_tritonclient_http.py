"""tritonclient.http, unchanged, against a real modelgate process serving the demo models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient._plugin import InferenceServerClientPlugin
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import ADMIN_KEY, RunningServer

ROWS = np.array(
    [
        [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1],
        [5, 18000, 0.92, 0.97, 2, 14, 5, 41000, 60, 1, 9, 0],
    ],
    dtype=np.float32,
)


class BearerToken(InferenceServerClientPlugin):  # type: ignore[misc]
    """tritonclient's plugin hook, as a user would add a key to every request."""

    def __init__(self, key: str) -> None:
        self._value = f"Bearer {key}"

    def __call__(self, request: Any) -> None:
        request.headers["authorization"] = self._value


@pytest.fixture
def client(demo_server: RunningServer) -> httpclient.InferenceServerClient:
    client = httpclient.InferenceServerClient(demo_server.http_address, network_timeout=30)
    client.register_plugin(BearerToken(ADMIN_KEY))
    return client


def test_without_a_key_the_server_refuses(demo_server: RunningServer) -> None:
    bare = httpclient.InferenceServerClient(demo_server.http_address, network_timeout=30)
    assert bare.is_server_ready()  # health stays open
    with pytest.raises(InferenceServerException) as info:
        bare.get_model_metadata("credit-risk")
    assert info.value.status() == "401"


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "modelgate" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_lists_versions_and_feature_names(
    client: httpclient.InferenceServerClient,
) -> None:
    meta = client.get_model_metadata("credit-risk")
    assert meta["versions"] == ["1", "2"]
    (features,) = meta["inputs"]
    assert features["shape"] == [-1, 12] and features["datatype"] == "FP32"
    assert features["parameters"]["feature_names"].split(",")[0] == "age_band"
    assert client.is_model_ready("credit-risk", "1")


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_and_json(client: httpclient.InferenceServerClient, binary: bool) -> None:
    features = httpclient.InferInput("features", list(ROWS.shape), "FP32")
    features.set_data_from_numpy(ROWS, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        httpclient.InferRequestedOutput("label", binary_data=binary),
    ]
    result = client.infer("credit-risk", [features], outputs=outputs, request_id="r-1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert result.as_numpy("label").tolist() == probabilities.argmax(axis=1).tolist()
    response = result.get_response()
    assert response["model_version"] == "2" and response["id"] == "r-1"


def test_versions_answer_differently(client: httpclient.InferenceServerClient) -> None:
    features = httpclient.InferInput("features", list(ROWS.shape), "FP32")
    features.set_data_from_numpy(ROWS)
    v1 = client.infer("credit-risk", [features], model_version="1")
    v2 = client.infer("credit-risk", [features], model_version="2")
    assert v1.get_response()["model_version"] == "1"
    assert not np.allclose(v1.as_numpy("probabilities"), v2.as_numpy("probabilities"))


def test_classification_extension(client: httpclient.InferenceServerClient) -> None:
    features = httpclient.InferInput("features", list(ROWS.shape), "FP32")
    features.set_data_from_numpy(ROWS)
    output = httpclient.InferRequestedOutput("probabilities", class_count=1)
    result = client.infer("credit-risk", [features], outputs=[output])
    top = [row[0].decode().split(":")[2] for row in result.as_numpy("probabilities")]
    assert top == ["repaid", "default"]


def test_bytes_tensor_into_the_embedding_model(client: httpclient.InferenceServerClient) -> None:
    text = httpclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"hello world", "grüße".encode()], dtype=object))
    result = client.infer("all-MiniLM-L6-v2", [text])
    embedding = result.as_numpy("embedding")
    assert embedding.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-4)
    assert (result.as_numpy("token_count") > 2).all()


def test_errors_surface_as_exceptions_with_status(client: httpclient.InferenceServerClient) -> None:
    features = httpclient.InferInput("features", [1, 3], "FP32")
    features.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("credit-risk", [features])
    assert info.value.status() == "400" and "expects [-1, 12]" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no-such-model")
    assert info.value.status() == "404"


def test_repository_load_unload_statistics_and_config(
    client: httpclient.InferenceServerClient,
) -> None:
    index = client.get_model_repository_index()
    assert {row["name"] for row in index} >= {"credit-risk", "all-MiniLM-L6-v2"}
    client.unload_model("credit-risk")
    assert not client.is_model_ready("credit-risk")
    client.load_model("credit-risk")
    assert client.is_model_ready("credit-risk")
    features = httpclient.InferInput("features", list(ROWS.shape), "FP32")
    features.set_data_from_numpy(ROWS)
    client.infer("credit-risk", [features], model_version="1")
    stats = client.get_inference_statistics("credit-risk", "1")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] >= 1
    assert stats["inference_count"] >= 2
    config = client.get_model_config("credit-risk")
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == [12]
