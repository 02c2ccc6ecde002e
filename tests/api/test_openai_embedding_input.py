"""``/v1/embeddings`` input forms against the real MiniLM model, in-process.

Any JSON body answers 200 or a 4xx in OpenAI's error shape, never a 500 (hypothesis); token
ids decode to text that tokenizes back to the same ids (hypothesis, on the model's own
tokenizer); the openai SDK sends each input form and gets what the text would get."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.core.pipeline.embedding_context import token_decoder
from modelgate.settings import Settings
from tests.conftest import DEMO_MODELS

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.minilm]

ADMIN = "admin-" + "f" * 24
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
MODEL = "all-MiniLM-L6-v2"
VOCABULARY = 30522


@functools.cache
def _tokenizer() -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(DEMO_MODELS / MODEL / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def wordpiece(text: str) -> list[int]:
    """MiniLM's ids of ``text``, without [CLS] and [SEP] (what a client sends)."""
    return list(_tokenizer().encode(text, add_special_tokens=False).ids)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(
    demo_models: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=demo_models,
            data_dir=tmp_path_factory.mktemp("openai-input"),
            admin_key=ADMIN,
            log_level="warning",
            abuse_slow_after=1_000_000,  # many refusals on purpose
            abuse_block_after=1_000_000,
        )
    )
    await components.open()
    await components.start()
    yield components
    await components.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(app: Components) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sdk(client: httpx.AsyncClient) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url="http://test/v1", api_key=ADMIN, http_client=client, max_retries=0
    ) as c:
        yield c


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)
token_ids = st.integers(min_value=-2, max_value=VOCABULARY + 2) | st.integers()
inputs = (
    json_values
    | st.text(max_size=40)
    | st.lists(st.text(max_size=20), max_size=4)
    | st.lists(token_ids, max_size=6)
    | st.lists(st.lists(token_ids, max_size=6), max_size=3)
    | st.lists(st.integers(0, VOCABULARY - 1) | st.text(max_size=3), max_size=4)
)
bodies = (
    st.fixed_dictionaries(
        {"model": st.sampled_from([MODEL, "credit-risk"]) | json_values, "input": inputs},
        optional={
            "encoding_format": st.sampled_from(["float", "base64"]) | json_values,
            "dimensions": st.integers(-2, 400) | json_values,
            "truncate": st.booleans() | json_values,
            "user": st.text(max_size=5) | json_values,
        },
    )
    | json_values
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
async def test_any_json_body_answers_200_or_a_400_in_openai_shape(
    client: httpx.AsyncClient, body: Any
) -> None:
    response = await client.post("/v1/embeddings", json=body, headers=AS_ADMIN)
    known = isinstance(body, dict) and body.get("model") in (MODEL, "credit-risk")
    unknown_name = isinstance(body, dict) and isinstance(body.get("model"), str) and not known
    allowed = {200, 400} | ({404} if unknown_name and body["model"] else set())
    assert response.status_code in allowed, (body, response.text)
    if response.status_code == 200:
        data = response.json()["data"]
        value = body["input"]
        count = 1 if isinstance(value, str) or isinstance(value[0], int) else len(value)
        assert [d["index"] for d in data] == list(range(count))
        return
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=120))
async def test_token_ids_of_a_text_decode_to_text_with_the_same_ids(
    app: Components, text: str
) -> None:
    decoder: Any = token_decoder((await app.registry.acquire(MODEL, None)).runtime)
    ids = wordpiece(text)
    if not ids:
        return  # whitespace only: no token-id form to send
    (decoded,) = decoder.decode_tokens([ids])
    assert wordpiece(decoded) == ids


async def test_the_sdk_sends_each_input_form(sdk: openai.AsyncOpenAI) -> None:
    texts = ["The cat's café, unaffable!", "日本語 テキスト"]
    ids = [wordpiece(t) for t in texts]
    as_text = await sdk.embeddings.create(model=MODEL, input=texts)
    as_ids = await sdk.embeddings.create(model=MODEL, input=ids)
    one_text = await sdk.embeddings.create(model=MODEL, input=texts[0])
    one_ids = await sdk.embeddings.create(model=MODEL, input=ids[0])
    assert as_text.usage.prompt_tokens == as_ids.usage.prompt_tokens == sum(map(len, ids))
    assert one_ids.usage.prompt_tokens == len(ids[0])
    for got, want in zip(as_ids.data, as_text.data, strict=True):
        np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-6)
    np.testing.assert_allclose(one_ids.data[0].embedding, one_text.data[0].embedding, atol=1e-6)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "it is an empty string"),
        ([], "it is an empty list"),
        (["a", ""], "input 1 is an empty string"),
        ([[1, 2], []], "input 1 is an empty list of token ids"),
        ([[1, 2], [3, True]], "position 1 of input 1 is a boolean, not a token id"),
        ([[5, 2], [3, VOCABULARY]], f"token id {VOCABULARY} at position 1 of input 1"),
        ([7, -1], "token id -1 at position 1 of input 0"),
        (["a", 1], "input 1 is a number among strings"),
        ({"text": "a"}, "it is an object"),
        ([[1]] * 2049, "it has 2049 inputs; at most 2048"),  # OpenAI's cap, checked first
    ],
)
async def test_bad_input_is_refused_saying_where(
    client: httpx.AsyncClient, value: Any, says: str
) -> None:
    response = await client.post(
        "/v1/embeddings", json={"model": MODEL, "input": value}, headers=AS_ADMIN
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"].startswith("'$.input' is invalid: "), error
    assert says in error["message"] and error["param"] == "input"


async def test_token_ids_over_the_context_are_refused_or_cut(client: httpx.AsyncClient) -> None:
    ids = [2773] * 300  # "word"
    refused = await client.post(
        "/v1/embeddings", json={"model": MODEL, "input": [ids]}, headers=AS_ADMIN
    )
    assert refused.status_code == 400
    assert "input 0 has 300 tokens" in refused.json()["error"]["message"]
    cut = await client.post(
        "/v1/embeddings",
        json={"model": MODEL, "input": [ids], "truncate": True},
        headers=AS_ADMIN,
    )
    assert cut.status_code == 200 and cut.json()["usage"]["prompt_tokens"] == 254


async def test_models_state_the_context_of_embedding_models(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1/models", headers=AS_ADMIN)).json()["data"]
    models = {m["id"]: m for m in listed}
    assert models[MODEL]["context_length"] == 256
    assert models[MODEL]["max_input_tokens"] == 254
    assert "context_length" not in models["credit-risk"]
    one = (await client.get(f"/v1/models/{MODEL}", headers=AS_ADMIN)).json()
    assert one == models[MODEL]
