"""Feedback and concept drift through the real REST app and the real credit-risk demo model,
on SQLite and on PostgreSQL: ground truth attached by X-Request-Id (or the OIP id),
never across tenants; the true labels give about the validation accuracy, flipped ones
drift; erasure removes predictions and feedback; the training export round-trips
through pyarrow; bad feedback bodies always answer 4xx."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.cli import app as cli_app
from modelgate.demo import credit_risk
from modelgate.settings import Settings
from tests.contract.conftest import drop_postgres_database, new_postgres_database

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "f" * 24
PAYLOAD_KEY = base64.b64encode(os.urandom(32)).decode()
PSEUDONYM_KEY = "pseudonym-key-" + "f" * 20
ROWS = 500


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if request.param == "sqlite":
        yield None
        return
    url = new_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="module")
def environment(
    database: str | None, demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The settings, as the CLI reads them from the environment."""
    repository = tmp_path_factory.mktemp("models")
    # the demo's manifest allows payload logging, so that the export can join the inputs
    shutil.copytree(demo_models / "credit-risk", repository / "credit-risk")
    env = {
        "MODELGATE_MODEL_REPOSITORY": str(repository),
        "MODELGATE_DATA_DIR": str(tmp_path_factory.mktemp("feedback")),
        "MODELGATE_PAYLOAD_KEYS": json.dumps({"k1": PAYLOAD_KEY}),
        "MODELGATE_PAYLOAD_PSEUDONYM_KEY": PSEUDONYM_KEY,
    }
    if database is not None:
        env["MODELGATE_DATABASE_URL"] = database
    return env


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(environment: dict[str, str]) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=Path(environment["MODELGATE_MODEL_REPOSITORY"]),
            data_dir=Path(environment["MODELGATE_DATA_DIR"]),
            database_url=environment.get("MODELGATE_DATABASE_URL"),
            auth="required",
            admin_key=ADMIN,
            payload_keys={"k1": PAYLOAD_KEY},
            payload_pseudonym_key=PSEUDONYM_KEY,
            payload_flush_seconds=60,  # the service flushes when it needs to
            feedback_flush_seconds=60,
            # the property tests send hundreds of bad bodies with one key
            abuse_slow_after=1_000_000,
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
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tenants(client: httpx.AsyncClient) -> dict[str, Any]:
    """acme (which consents to payload logging) and globex, each with a key that infers
    and one that administers."""
    assert (await client.post("/admin/plans", json={"name": "std"}, headers=_as(ADMIN))).is_success
    out: dict[str, Any] = {}
    for name in ("acme", "globex"):
        made = await client.post(
            "/admin/tenants", json={"name": name, "plan": "std"}, headers=_as(ADMIN)
        )
        tid = made.json()["id"]
        keys = {}
        for key_name, scopes in (("runner", ["infer", "models:read"]), ("admin", ["keys:admin"])):
            key = await client.post(
                f"/admin/tenants/{tid}/keys",
                json={"name": key_name, "scopes": scopes},
                headers=_as(ADMIN),
            )
            keys[key_name] = key.json()["secret"]
        out[name] = {"id": tid, **keys}
    consent = await client.put(
        f"/admin/tenants/{out['acme']['id']}/payload-logging",
        json={"enabled": True},
        headers=_as(out["acme"]["admin"]),
    )
    assert consent.status_code == 200, consent.text
    return out


async def infer(
    client: httpx.AsyncClient,
    key: str,
    features: np.ndarray[Any, Any],
    version: str = "2",
    **extra: Any,
) -> httpx.Response:
    body = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": list(features.shape),
                "data": features.reshape(-1).tolist(),
            }
        ],
        **extra,
    }
    response = await client.post(
        f"/v2/models/credit-risk/versions/{version}/infer", json=body, headers=_as(key)
    )
    assert response.status_code == 200, response.text
    return response


async def feedback(client: httpx.AsyncClient, key: str, body: Any) -> httpx.Response:
    return await client.post("/v1/feedback", json=body, headers=_as(key))


async def concept(client: httpx.AsyncClient, version: str) -> dict[str, Any]:
    response = await client.get(
        f"/admin/models/credit-risk/monitoring?version={version}", headers=_as(ADMIN)
    )
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()["versions"][0]["concept"]
    return report


APPLICANT = np.array([[2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1]], np.float32)


async def test_feedback_attaches_to_a_real_prediction_by_request_id(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    acme = tenants["acme"]
    response = await infer(client, acme["runner"], np.repeat(APPLICANT, 3, axis=0))
    request_id = response.headers["x-request-id"]
    answer = await feedback(client, acme["runner"], {"request_id": request_id, "label": 1})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1}
    answer = await feedback(client, acme["runner"], {"request_id": request_id, "labels": [0, 1, 0]})
    assert answer.json() == {"accepted": 3}
    # the OIP id of the request names it too, and a client's own X-Request-Id is kept
    await infer(client, acme["runner"], APPLICANT, id="oip-42")
    answer = await feedback(
        client, acme["runner"], {"items": [{"request_id": "oip-42", "label": 0}]}
    )
    assert answer.json() == {"accepted": 1}
    sent = await client.post(
        "/v2/models/credit-risk/infer",
        json={"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 12],
                          "data": APPLICANT.reshape(-1).tolist()}]},
        headers={**_as(acme["runner"]), "X-Request-Id": "client-chosen-1"},
    )  # fmt: skip
    assert sent.headers["x-request-id"] == "client-chosen-1"
    answer = await feedback(client, acme["runner"], {"request_id": "client-chosen-1", "label": 1})
    assert answer.status_code == 200, answer.text


async def test_another_tenants_request_id_is_not_found(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    response = await infer(client, tenants["acme"]["runner"], APPLICANT)
    request_id = response.headers["x-request-id"]
    answer = await feedback(
        client, tenants["globex"]["runner"], {"request_id": request_id, "label": 1}
    )
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert answer.json()["error"]["code"] is None  # a prediction, not a model, is missing
    unknown = await feedback(
        client, tenants["globex"]["runner"], {"request_id": "nope", "label": 1}
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == answer.json()["error"]["message"].replace(
        request_id, "nope"
    )
    # all or none: a batch naming one unknown id labels nothing
    batch = {"items": [{"request_id": request_id, "label": 1}, {"request_id": "nope", "label": 1}]}
    assert (await feedback(client, tenants["acme"]["runner"], batch)).status_code == 404
    no_key = await client.post("/v1/feedback", json={"request_id": request_id, "label": 1})
    assert no_key.status_code == 401
    admin_only = await feedback(
        client, tenants["acme"]["admin"], {"request_id": request_id, "label": 1}
    )
    assert admin_only.status_code == 403


async def test_true_labels_match_validation_and_flipped_labels_drift(
    client: httpx.AsyncClient, tenants: dict[str, Any], app: Components
) -> None:
    """Version 2 gets the true labels of fresh applicants, version 1 the flipped ones."""
    data = credit_risk.generate(ROWS, seed=7)
    runner = tenants["globex"]["runner"]
    before = await concept(client, "2")
    assert before["status"] == "insufficient data"
    for version, flip in (("2", False), ("1", True)):
        items = []
        for start in range(0, ROWS, 50):
            rows = slice(start, start + 50)
            response = await infer(client, runner, data.features[rows], version=version)
            labels = data.labels[rows]
            labels = 1 - labels if flip else labels
            items.append(
                {"request_id": response.headers["x-request-id"], "labels": labels.tolist()}
            )
        answer = await feedback(client, runner, {"items": items})
        assert answer.json() == {"accepted": ROWS}
    good, flipped = await concept(client, "2"), await concept(client, "1")
    validation = app.registry.versions("credit-risk")[1].manifest.card["validation_metrics"]
    assert good["labelled"] >= ROWS  # and the few labelled above
    assert good["status"] in ("ok", "watch"), good
    assert abs(good["accuracy"] - validation["accuracy"]) < 0.05
    assert abs(good["auc"] - validation["auc"]) < 0.06
    assert good["brier"] < 0.15 and good["ece"] < 0.1
    assert good["validation"]["accuracy"] == pytest.approx(validation["accuracy"])
    assert flipped["status"] == "drift" and flipped["drift"] is True
    assert flipped["accuracy"] < 0.3 and flipped["auc"] < 0.4
    assert flipped["accuracy_drop"] > flipped["accuracy_drift_threshold"]


async def test_erasure_removes_predictions_and_feedback(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    acme = tenants["acme"]
    response = await infer(client, acme["runner"], APPLICANT, parameters={"subject": "user-7"})
    request_id = response.headers["x-request-id"]
    assert (
        await feedback(client, acme["runner"], {"request_id": request_id, "label": 1})
    ).is_success
    exported = await client.get("/admin/subjects/user-7/export", headers=_as(acme["admin"]))
    rows = exported.json()["predictions"]
    assert [(r["request_id"], r["label"], r["predicted"]) for r in rows] == [
        (request_id, 1, rows[0]["predicted"])
    ]
    assert rows[0]["subject"] == exported.json()["pseudonym"]
    # another tenant erases nothing of acme's
    theirs = await client.delete("/admin/subjects/user-7", headers=_as(tenants["globex"]["admin"]))
    assert theirs.json()["erased"]["predictions"] == 0
    erased = await client.delete("/admin/subjects/user-7", headers=_as(acme["admin"]))
    assert erased.json()["erased"] == {"payload_logs": 1, "predictions": 1}
    again = await feedback(client, acme["runner"], {"request_id": request_id, "label": 0})
    assert again.status_code == 404
    exported = await client.get("/admin/subjects/user-7/export", headers=_as(acme["admin"]))
    assert exported.json()["predictions"] == []


async def test_the_training_export_round_trips_through_pyarrow(
    client: httpx.AsyncClient,
    tenants: dict[str, Any],
    app: Components,
    environment: dict[str, str],
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    acme = tenants["acme"]
    features = credit_risk.generate(4, seed=11).features
    response = await infer(client, acme["runner"], features, version="1")
    request_id = response.headers["x-request-id"]
    answer = await feedback(
        client, acme["runner"], {"request_id": request_id, "labels": [1, 0, 1, 1]}
    )
    assert answer.is_success
    assert app.payloads is not None and app.feedback is not None
    await app.payloads.flush()
    await app.feedback.flush()
    runner = CliRunner()
    results = {}
    for form in ("parquet", "jsonl"):
        out = tmp_path / f"train.{form}"
        result = await asyncio.to_thread(
            runner.invoke,
            cli_app,
            ["feedback", "export", "--model", "credit-risk", "--version", "1", "--format", form,
             "--out", str(out), "--tenant", acme["id"]],
            env=environment,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        results[form] = out
    table = pq.read_table(results["parquet"]).to_pylist()
    lines = [json.loads(line) for line in results["jsonl"].read_text().splitlines()]
    ours = [row for row in table if row["request_id"] == request_id]
    assert [row["label"] for row in ours] == [1, 0, 1, 1]
    assert [row["row"] for row in ours] == [0, 1, 2, 3]
    for row in ours:
        assert row["inputs"]["features"] == pytest.approx(features[row["row"]].tolist())
        assert 0.0 <= row["score"] <= 1.0 and row["predicted"] in (0, 1)
    assert [row["prediction_id"] for row in table] == [row["prediction_id"] for row in lines]
    assert all(row["tenant_id"] == acme["id"] for row in table)


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.lists(st.integers(-3, 3), max_size=3),
)  # fmt: skip
_ITEMS = st.dictionaries(
    st.sampled_from(["request_id", "label", "labels", "row", "other"]), _VALUES, max_size=4
)
_BODIES = st.one_of(_ITEMS, st.fixed_dictionaries({"items": st.lists(_ITEMS, max_size=3)}), _VALUES)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_BODIES)
async def test_bad_feedback_always_answers_4xx(
    client: httpx.AsyncClient, tenants: dict[str, Any], body: Any
) -> None:
    response = await feedback(client, tenants["globex"]["runner"], body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["type"] == "invalid_request_error"


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=64))
async def test_bytes_that_are_not_json_answer_400(
    client: httpx.AsyncClient, tenants: dict[str, Any], raw: bytes
) -> None:
    response = await client.post(
        "/v1/feedback", content=raw, headers=_as(tenants["globex"]["runner"])
    )
    assert response.status_code in (400, 404), response.text
