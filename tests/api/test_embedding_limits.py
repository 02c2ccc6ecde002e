"""The real MiniLM demo model over its token limits, through ``/v1/embeddings`` (finding 3).

By default a text over ``max_tokens_per_text`` (the model's 256) is cut to it, as
sentence-transformers does; with ``limits.truncate: false`` it is refused as OpenAI refuses
(400 ``context_length_exceeded``), and so is a request over ``max_total_tokens``; refused
requests never reach the model. Also: the byte bound the request path relies on to skip
tokenizing short texts holds for the real tokenizer (hypothesis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
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


async def embed(client: httpx.AsyncClient, texts: list[str]) -> httpx.Response:
    return await client.post(
        "/v1/embeddings", json={"model": MODEL, "input": texts}, headers=AS_ADMIN
    )


async def test_a_text_over_the_token_limit_is_truncated_by_default(
    client: httpx.AsyncClient,
) -> None:
    response = await embed(client, [words(400), words(10)])
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 256 + 12  # cut at 256


async def test_over_the_token_limits_is_refused_as_openai_does(
    app: Components, client: httpx.AsyncClient, refusing: None
) -> None:
    assert (await embed(client, [words(254)])).status_code == 200  # 256 tokens: at the cap
    before = executions(app)
    for texts, limit, value in [
        ([words(255)], "max_tokens_per_text", 256),  # 257 tokens
        ([words(400), "short"], "max_tokens_per_text", 256),
        ([words(200)] * 5, "max_total_tokens", 1000),  # 5 x 202
    ]:
        response = await embed(client, texts)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "input"
        assert error["code"] == "context_length_exceeded"
        assert f"at most {value} (limits.{limit})" in error["message"]
    assert executions(app) == before  # the model never ran for them
    ok = await embed(client, [words(200)] * 4)  # 808 tokens
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 808


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
