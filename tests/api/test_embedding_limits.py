"""The real MiniLM demo model over its token limits, through ``/v1/embeddings`` (finding 3).

By default a text over ``max_tokens_per_text`` (the model's 256) is refused on
``/v1/embeddings`` as OpenAI refuses (400 ``context_length_exceeded``) and cut on OIP, as
sentence-transformers does; ``"truncate": true`` in the request cuts it on ``/v1`` too. With
``limits.truncate: false`` it is refused everywhere, whatever the request asks, and so is a
request over ``max_total_tokens``; refused requests never reach the model. Also: the byte
bound the request path relies on to skip tokenizing short texts holds for the real tokenizer
(hypothesis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.core.serving.request_size import token_counter
from modelgate.settings import Settings

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.minilm]

ADMIN = "admin-" + "e" * 24
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
MODEL = "all-MiniLM-L6-v2"


def words(n: int) -> str:
    """``n`` words of one token each: ``n + 2`` tokens with [CLS] and [SEP]."""
    return " ".join(["word"] * n)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=demo_models,
            data_dir=tmp_path_factory.mktemp("embedding-limits"),
            admin_key=ADMIN,
            log_level="warning",
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


@pytest_asyncio.fixture(loop_scope="module")
async def refusing(app: Components) -> AsyncIterator[None]:
    """MiniLM loaded with ``limits: {truncate: false, max_total_tokens: 1000}``."""
    await app.registry.load(MODEL, {"limits": {"truncate": False, "max_total_tokens": 1000}})
    yield
    await app.registry.load(MODEL, None)


def executions(app: Components) -> int:
    return sum(v.stats.execution_count for v in app.registry.versions(MODEL))


async def embed(client: httpx.AsyncClient, texts: list[str], **extra: object) -> httpx.Response:
    return await client.post(
        "/v1/embeddings", json={"model": MODEL, "input": texts, **extra}, headers=AS_ADMIN
    )


async def test_a_text_over_the_context_is_refused_unless_the_request_cuts_it(
    app: Components, client: httpx.AsyncClient
) -> None:
    before = executions(app)
    response = await embed(client, [words(10), words(400)])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "input")
    assert error["code"] == "context_length_exceeded"
    assert "maximum context length is 254 tokens per input" in error["message"]
    assert "input 1 has 400 tokens" in error["message"]
    assert executions(app) == before  # refused before the model ran
    cut = await embed(client, [words(400), words(10)], truncate=True)
    assert cut.status_code == 200, cut.text
    assert cut.json()["usage"]["prompt_tokens"] == 254 + 10  # cut at 256 with [CLS], [SEP]
    at_the_limit = await embed(client, [words(254)])
    assert at_the_limit.json()["usage"]["prompt_tokens"] == 254
    assert (await embed(client, [words(1)], truncate="yes")).status_code == 400


async def test_the_oip_path_still_cuts_by_default(client: httpx.AsyncClient) -> None:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [1], "data": [words(400)]}
    response = await client.post(
        f"/v2/models/{MODEL}/infer", json={"inputs": [tensor]}, headers=AS_ADMIN
    )
    assert response.status_code == 200, response.text
    counts = next(o for o in response.json()["outputs"] if o["name"] == "token_count")
    assert counts["data"] == [256]  # [CLS] and [SEP] included, as the model ran


async def test_a_text_over_the_byte_limit_is_cut_only_when_asked(
    client: httpx.AsyncClient,
) -> None:
    refused = await embed(client, ["word " * 4000])  # 20,000 bytes: never tokenized
    assert refused.status_code == 400
    assert "input 0 is 20000 bytes" in refused.json()["error"]["message"]
    assert "limits.max_text_bytes" in refused.json()["error"]["message"]
    cut = await embed(client, ["word " * 4000], truncate=True)
    assert cut.status_code == 200 and cut.json()["usage"]["prompt_tokens"] == 254
    same = await embed(client, [words(254)])
    np.testing.assert_allclose(
        cut.json()["data"][0]["embedding"], same.json()["data"][0]["embedding"], atol=1e-6
    )


async def test_over_the_token_limits_is_refused_as_openai_does(
    app: Components, client: httpx.AsyncClient, refusing: None
) -> None:
    assert (await embed(client, [words(254)])).status_code == 200  # 256 tokens: at the cap
    before = executions(app)
    for texts, says in [
        ([words(255)], "context length is 254 tokens per input"),  # 257 tokens
        ([words(400), "short"], "context length is 254 tokens per input"),
        ([words(200)] * 5, "at most 1000 (limits.max_total_tokens)"),  # 5 x 202
    ]:
        for extra in ({}, {"truncate": True}):  # the manifest's false wins
            response = await embed(client, texts, **extra)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["param"] == "input"
            assert error["code"] == "context_length_exceeded"
            assert says in error["message"]
    assert executions(app) == before  # the model never ran for them
    ok = await embed(client, [words(200)] * 4)  # 808 tokens, 800 without [CLS] and [SEP]
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 800


async def test_a_one_mib_text_is_refused_before_tokenization(
    app: Components, client: httpx.AsyncClient
) -> None:
    before = executions(app)
    response = await embed(client, ["x" * (1 << 20)])
    assert response.status_code == 400, response.text
    assert "limits.max_text_bytes" in response.json()["error"]["message"]
    tensor = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x" * (1 << 20)]}
    oip = await client.post(
        f"/v2/models/{MODEL}/infer", json={"inputs": [tensor]}, headers=AS_ADMIN
    )
    assert oip.status_code == 413 and "limits.max_text_bytes" in oip.json()["error"]
    assert executions(app) == before


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=st.text(max_size=200))
async def test_a_text_never_has_more_tokens_than_bytes_plus_the_special_ones(
    app: Components, text: str
) -> None:
    counter: Any = token_counter((await app.registry.acquire(MODEL, None)).runtime)
    assert counter is not None
    data = text.encode("utf-8", errors="surrogatepass")
    (count,) = counter.count_tokens([data])
    assert count <= len(data) + counter.special_tokens
