"""Drift of the MiniLM text-embedding demo model through the real server: texts drawn like
its reference profile's show no drift; very different texts (long repeated tokens, other
languages) make both the input lengths and the embeddings drift. Version 1 gets the
like-reference texts and version 2 the different ones, so each has a window of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.demo.sentences import REFERENCE_SENTENCES, generated_sentences
from modelgate.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "t" * 24
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
MODEL = "all-MiniLM-L6-v2"
# the reference's mix: its edge cases and ordinary sentences from the same templates
LIKE_REFERENCE = [*REFERENCE_SENTENCES, *generated_sentences(300, seed=11)]
UNLIKE_REFERENCE = [
    *(f"{word} " * 300 for word in ("zzz", "lorem", "ipsum", "0x7f", "buffalo") * 12),
    *(
        text
        for _ in range(12)
        for text in (
            "Der Vorstand hat den Haushalt nach langer Diskussion abgelehnt.",
            "El consejo aprobó el presupuesto trimestral sin objeciones.",
            "我们的团队昨天发布了新版本的应用程序。",
            "Совет директоров отложил решение до следующей недели.",
            "東京の天気は明日から雨になるでしょう。",
        )
    ),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=demo_models,
            data_dir=tmp_path_factory.mktemp("text-drift"),
            admin_key=ADMIN,
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


async def send(client: httpx.AsyncClient, version: str, texts: list[str]) -> None:
    for start in range(0, len(texts), 32):
        batch = texts[start : start + 32]
        body = {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(batch)], "data": batch}]
        }
        response = await client.post(
            f"/v2/models/{MODEL}/versions/{version}/infer", json=body, headers=AS_ADMIN
        )
        assert response.status_code == 200, response.text


async def text_report(client: httpx.AsyncClient, version: str) -> dict[str, Any]:
    response = await client.get(
        f"/admin/models/{MODEL}/monitoring", params={"version": version}, headers=AS_ADMIN
    )
    assert response.status_code == 200, response.text
    (report,) = response.json()["versions"]
    assert report["features"] == [] and report["anomalies"] is None
    return report  # type: ignore[no-any-return]


async def test_texts_like_the_reference_show_no_drift(client: httpx.AsyncClient) -> None:
    await send(client, "1", LIKE_REFERENCE)
    report = await text_report(client, "1")
    text = report["text"]
    assert text["input"] == "text"
    assert text["length"]["unit"] == "tokens" and text["length"]["rows"] == len(LIKE_REFERENCE)
    assert text["embedding"]["rows"] == len(LIKE_REFERENCE)
    assert text["length"]["status"] != "drift" and text["length"]["psi"] < 0.2
    assert text["embedding"]["status"] != "drift" and text["embedding"]["psi"] < 0.2
    assert text["embedding"]["centroid_distance"] < 0.05
    assert report["status"] in ("ok", "watch") and report["drift"] is False


async def test_very_different_texts_drift(client: httpx.AsyncClient) -> None:
    await send(client, "2", UNLIKE_REFERENCE)
    report = await text_report(client, "2")
    text = report["text"]
    assert text["length"]["status"] == "drift"
    assert text["length"]["live_mean"] > 3 * text["length"]["reference_mean"]
    assert text["embedding"]["status"] == "drift"
    assert text["embedding"]["ks"] > text["embedding"]["ks_threshold"]
    assert text["embedding"]["centroid_distance"] > 0.2
    assert text["status"] == "drift" and report["drift"] is True
