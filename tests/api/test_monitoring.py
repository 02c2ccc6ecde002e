"""Model monitoring through the real server and the real credit-risk demo model: rows drawn
like the training data raise no drift; rows with a shifted feature make that feature (and
only that one) drift. Version 1 gets the unshifted traffic and version 2 the shifted, so
each has a window of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.demo import credit_risk
from modelgate.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "m" * 24
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
ROWS = 500
INCOME = credit_risk.FEATURE_NAMES.index("annual_income")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=demo_models,
            data_dir=tmp_path_factory.mktemp("monitoring"),
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
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def send(client: httpx.AsyncClient, version: str, features: np.ndarray[Any, Any]) -> None:
    for start in range(0, len(features), 50):
        batch = features[start : start + 50]
        body = {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": list(batch.shape),
                    "data": batch.ravel().tolist(),
                }
            ]
        }
        response = await client.post(
            f"/v2/models/credit-risk/versions/{version}/infer", json=body, headers=AS_ADMIN
        )
        assert response.status_code == 200, response.text


async def monitoring(client: httpx.AsyncClient, version: str) -> dict[str, Any]:
    response = await client.get(
        "/admin/models/credit-risk/monitoring",
        params={"version": version},
        headers=AS_ADMIN,
    )
    assert response.status_code == 200, response.text
    (report,) = response.json()["versions"]
    assert report["version"] == version
    return report  # type: ignore[no-any-return]


async def test_few_rows_are_insufficient_data(client: httpx.AsyncClient) -> None:
    await send(client, "1", credit_risk.generate(20, seed=1).features)
    report = await monitoring(client, "1")
    assert report["status"] == "insufficient data"
    assert report["drift"] is False and report["rows"] == 20


async def test_traffic_like_the_training_data_raises_no_drift(client: httpx.AsyncClient) -> None:
    await send(client, "1", credit_risk.generate(ROWS, seed=11).features)
    report = await monitoring(client, "1")
    assert report["rows"] == ROWS + 20
    names = [f["name"] for f in report["features"]]
    assert names == list(credit_risk.FEATURE_NAMES)
    assert [f["name"] for f in report["features"] if f["status"] == "drift"] == []
    assert all(f["psi"] < 0.2 for f in report["features"])
    assert report["drift"] is False
    assert {p["output"] for p in report["predictions"]} == {"label", "probabilities"}
    assert all(p["status"] != "drift" for p in report["predictions"])
    confidence = report["confidence"]["probabilities"]
    assert 0.5 <= confidence["mean_top_probability"] <= 1.0
    assert 0.0 <= confidence["low_confidence_share"] <= 1.0


async def test_a_shifted_feature_drifts_alone(client: httpx.AsyncClient) -> None:
    features = credit_risk.generate(ROWS, seed=12).features.copy()
    features[:, INCOME] *= 3
    await send(client, "2", features)
    report = await monitoring(client, "2")
    drifted = [f["name"] for f in report["features"] if f["status"] == "drift"]
    assert drifted == ["annual_income"]
    income = next(f for f in report["features"] if f["name"] == "annual_income")
    assert income["psi"] > 0.2 and income["ks"] > income["ks_threshold"]
    assert report["drift"] is True and report["status"] == "drift"


async def test_every_loaded_version_is_reported(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/models/credit-risk/monitoring", headers=AS_ADMIN)
    assert response.status_code == 200
    assert [r["version"] for r in response.json()["versions"]] == ["1", "2"]


async def test_unknown_model_and_missing_credential(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/admin/models/nope/monitoring", headers=AS_ADMIN)
    assert unknown.status_code == 404
    anonymous = await client.get("/admin/models/credit-risk/monitoring")
    assert anonymous.status_code == 401


@pytest.mark.parametrize("version", ["99", "0", "x", "' OR 1=1 --"])
async def test_a_version_that_is_not_loaded_is_a_404(
    client: httpx.AsyncClient, version: str
) -> None:
    response = await client.get(
        "/admin/models/credit-risk/monitoring", params={"version": version}, headers=AS_ADMIN
    )
    assert response.status_code == 404 and set(response.json()) == {"error"}
