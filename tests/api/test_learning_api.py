"""``/admin/models/{m}/learn`` through the real REST app: who may start a run, what a model
without a learning section, an unknown model or run, and a run on another replica answer,
and a run without enough data, which stops before any trainer runs. Bad names never 5xx."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "l" * 24
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def repository(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    shutil.copytree(demo_models / "credit-risk", folder / "credit-risk")
    shutil.copytree(demo_models / "credit-risk", folder / "plain")
    plain = folder / "plain" / "model.yaml"
    without = yaml.safe_load(plain.read_text())
    del without["learning"]  # the demo's manifest has one
    plain.write_text(yaml.safe_dump(without))
    path = folder / "credit-risk" / "model.yaml"
    manifest = yaml.safe_load(path.read_text())
    manifest["payload_logging"] = {"enabled": True, "purpose": "retraining", "retention_days": 9}
    manifest["learning"] = {"trainer": "modelgate.learning.trainers.credit_risk:train"}
    path.write_text(yaml.safe_dump(manifest))
    # a model whose run folder cannot be made (as on a read-only repository)
    shutil.copytree(folder / "credit-risk", folder / "frozen")
    (folder / "frozen" / ".learning").write_text("not a folder")
    # a model whose candidates would be code, loaded in the server: never retrained
    shutil.copytree(folder / "credit-risk", folder / "pickled")
    manifest["runtime"] = "skops"
    (folder / "pickled" / "model.yaml").write_text(yaml.safe_dump(manifest))
    return folder


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    components: Components = build_components(
        Settings(
            model_repository=repository,
            data_dir=tmp_path_factory.mktemp("data"),
            admin_key=ADMIN,
            payload_keys={"k1": base64.b64encode(os.urandom(32)).decode()},
            payload_pseudonym_key="pseudonym-" + "l" * 22,
            abuse_slow_after=1_000_000,
            abuse_block_after=1_000_000,
        )
    )
    await components.open()
    await components.start()
    transport = httpx.ASGITransport(app=components.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
    await components.close()


async def test_a_run_without_enough_data_stops_before_training(app: httpx.AsyncClient) -> None:
    started = await app.post("/admin/models/credit-risk/learn", headers=AUTH)
    assert started.status_code == 202, started.text
    run = started.json()
    assert run["status"] == "running" and run["stage"] == "dataset"
    assert run["started_by"] == "admin:bootstrap-admin" and run["trigger"] == "manual"
    for _ in range(100):
        run = (await app.get(f"/admin/models/credit-risk/learn/{run['id']}", headers=AUTH)).json()
        if run["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert run["status"] == "failed"
    assert run["message"] == (
        "not enough data: 0 labelled rows with consented inputs, learning.min_rows is 200"
    )
    assert "training" not in run["report"]  # no trainer ran
    listed = (await app.get("/admin/models/credit-risk/learn", headers=AUTH)).json()
    assert [r["id"] for r in listed] == [run["id"]] and "report" not in listed[0]
    trail = (await app.get("/admin/audit", headers=AUTH)).json()
    assert {"learning.start", "learning.failed"} <= {e["action"] for e in trail}


async def test_a_run_of_another_replica_holds_the_model(
    app: httpx.AsyncClient, repository: Path
) -> None:
    lock = repository / "credit-risk" / ".learning" / ".lock"
    lock.parent.mkdir(exist_ok=True)
    lock.write_text("run_20260101T000000_abcdef")
    try:
        refused = await app.post("/admin/models/credit-risk/learn", headers=AUTH)
    finally:
        lock.unlink()
    assert refused.status_code == 409
    assert refused.json() == {
        "error": "a learning run of 'credit-risk' is in progress on another replica"
    }


async def test_a_repository_it_cannot_write_answers_503_not_500(app: httpx.AsyncClient) -> None:
    refused = await app.post("/admin/models/frozen/learn", headers=AUTH)
    assert refused.status_code == 503, refused.text
    said = refused.json()["error"]
    assert said.startswith("the learning run of 'frozen' cannot start: the model repository")
    assert "not writable" in said


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        (
            "POST",
            "/admin/models/plain/learn",
            400,
            "model 'plain' has no learning section (docs/learning.md)",
        ),
        ("POST", "/admin/models/nothing/learn", 404, "unknown model 'nothing'"),
        (
            "POST",
            "/admin/models/pickled/learn",
            400,
            "model 'pickled' runs on skops: the learning loop only retrains onnxruntime models "
            "(a candidate is loaded in the server; docs/learning.md)",
        ),
        ("GET", "/admin/models/credit-risk/learn/run_x", 404, "unknown learning run 'run_x'"),
        ("GET", "/admin/models/credit-risk/learn?limit=0", 422, None),
    ],
)
async def test_bad_requests_answer_4xx(
    app: httpx.AsyncClient, method: str, path: str, status: int, says: str | None
) -> None:
    answer = await app.request(method, path, headers=AUTH)
    assert answer.status_code == status, answer.text
    if says is not None:
        assert answer.json() == {"error": says}


async def test_only_operators_start_runs(app: httpx.AsyncClient) -> None:
    assert (await app.post("/admin/plans", json={"name": "p"}, headers=AUTH)).is_success
    tenant = (
        await app.post("/admin/tenants", json={"name": "t", "plan": "p"}, headers=AUTH)
    ).json()
    key = await app.post(
        f"/admin/tenants/{tenant['id']}/keys",
        json={"name": "k", "scopes": ["infer", "models:read"]},
        headers=AUTH,
    )
    theirs = {"Authorization": f"Bearer {key.json()['secret']}"}
    assert (await app.post("/admin/models/credit-risk/learn", headers=theirs)).status_code == 403
    assert (await app.get("/admin/models/credit-risk/learn", headers=theirs)).status_code == 403
    assert (await app.post("/admin/models/credit-risk/learn")).status_code == 401


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(model=st.text(min_size=1, max_size=40), run=st.text(min_size=1, max_size=40))
async def test_any_names_answer_without_a_server_error(
    app: httpx.AsyncClient, model: str, run: str
) -> None:
    quoted_model, quoted_run = quote(model, safe=""), quote(run, safe="")
    for path in (
        f"/admin/models/{quoted_model}/learn/{quoted_run}",
        f"/admin/models/{quoted_model}/learn",
    ):
        answer = await app.get(path, headers=AUTH)
        # 4xx, or the admin app's 307 for a path that decodes to a trailing slash; never 5xx
        assert 300 <= answer.status_code < 500, (path, answer.status_code, answer.text)
