"""The official openai SDK, unchanged, against a real modelgate process; and embedding
accuracy against sentence-transformers' own output on the same weights."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import DEMO_MODELS
from tests.e2e.conftest import ADMIN_KEY, AUTH, RunningServer

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture
def client(demo_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{demo_server.url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60
    )


def _reference() -> tuple[list[str], np.ndarray]:
    data = json.loads((DEMO_MODELS / MODEL / "reference_embeddings.json").read_text())
    return data["sentences"], np.array(data["embeddings"], dtype=np.float64)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"credit-risk", MODEL} <= ids


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_match_sentence_transformers(client: openai.OpenAI, encoding: str) -> None:
    sentences, reference = _reference()
    assert len(sentences) >= 20 and "" in sentences
    keep = [i for i, s in enumerate(sentences) if s]  # OpenAI refuses "", and so does /v1
    sentences, reference = [sentences[i] for i in keep], reference[keep]
    # sentence-transformers cuts its one long sentence (486 tokens) to the context: so must we
    response = client.embeddings.create(
        model=MODEL, input=sentences, encoding_format=encoding, extra_body={"truncate": True}
    )
    if encoding == "base64":  # asked for explicitly, the SDK hands back the base64 text
        got = np.array([np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in response.data])
    else:
        got = np.array([d.embedding for d in response.data])
    assert [d.index for d in response.data] == list(range(len(sentences)))
    assert _cosines(got, reference).min() >= 0.999
    assert response.usage.prompt_tokens == response.usage.total_tokens > len(sentences)


def test_int8_version_stays_close_to_the_reference(demo_server: RunningServer) -> None:
    sentences, reference = _reference()
    body = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [len(sentences)], "data": sentences}
        ],
        "outputs": [{"name": "embedding"}],
    }
    response = httpx.post(
        f"{demo_server.url}/v2/models/{MODEL}/versions/2/infer", json=body, timeout=60, headers=AUTH
    )
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    got = np.array(output["data"]).reshape(output["shape"])
    assert _cosines(got, reference).min() >= 0.98


def test_single_string_and_usage_counts_real_tokens(client: openai.OpenAI) -> None:
    one = client.embeddings.create(model=MODEL, input="hello world")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    assert one.usage.prompt_tokens == 2  # hello world: [CLS] and [SEP] not counted
    with pytest.raises(openai.BadRequestError) as info:  # as OpenAI refuses it
        client.embeddings.create(model=MODEL, input="word " * 1000)
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length is 254 tokens" in info.value.message
    assert "input 0 has 1000 tokens" in info.value.message
    long = client.embeddings.create(
        model=MODEL, input="word " * 1000, extra_body={"truncate": True}
    )
    assert long.usage.prompt_tokens == 254  # cut at the model's 256, [CLS] and [SEP] included


def test_token_id_inputs_embed_as_their_text(client: openai.OpenAI) -> None:
    """The four input forms; ids are MiniLM's WordPiece ids ("hello world" is 7592 2088)."""
    text = client.embeddings.create(model=MODEL, input=["hello world", "world"])
    ids = client.embeddings.create(model=MODEL, input=[[7592, 2088], [2088]])
    one = client.embeddings.create(model=MODEL, input=[7592, 2088])
    assert ids.usage.prompt_tokens == text.usage.prompt_tokens == 3
    for got, want in zip(ids.data, text.data, strict=True):
        np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-6)
    np.testing.assert_allclose(one.data[0].embedding, text.data[0].embedding, atol=1e-6)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input=[[7592, 100277]])
    assert "token id 100277 at position 1 of input 0" in info.value.message


def test_models_state_the_context(client: openai.OpenAI) -> None:
    model = client.models.retrieve(MODEL).model_dump()
    assert (model["context_length"], model["max_input_tokens"]) == (256, 254)
    assert "context_length" not in client.models.retrieve("credit-risk").model_dump()


def test_dimensions_truncate_and_renormalize(client: openai.OpenAI) -> None:
    full = client.embeddings.create(model=MODEL, input="a cat on a mat").data[0].embedding
    short = client.embeddings.create(model=MODEL, input="a cat on a mat", dimensions=64)
    vector = np.array(short.data[0].embedding)
    assert vector.shape == (64,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, rel=1e-5)
    expected = np.array(full[:64]) / np.linalg.norm(full[:64])
    np.testing.assert_allclose(vector, expected, rtol=1e-4, atol=1e-6)


def test_errors_come_back_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input="x", dimensions=1000)
    assert "dimensions" in str(info.value)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="credit-risk", input="x")
