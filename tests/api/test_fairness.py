"""Fairness audits through a real server and the real credit-risk demo model: traffic from
two age bands (and a few rows of a third), feedback labels sent back, and the audit of
``GET /admin/models/{m}/fairness`` (and ``modelgate fairness``) equal to Fairlearn's
metrics computed directly from the same predictions and labels; a group below the
minimum size is reported, flagged, and left out; a tenant audits only its own
predictions, never another tenant's model."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
import yaml
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score
from typer.testing import CliRunner

from modelgate.cli import app as cli_app
from modelgate.demo import credit_risk
from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "a" * 24
MIN_GROUP = 30
SMALL_GROUP = 12  # rows of age band 4: below MIN_GROUP


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _model_dir(demo: Path, folder: Path, **extra: Any) -> None:
    folder.mkdir()
    manifest = yaml.safe_load((demo / "credit-risk" / "model.yaml").read_text())
    manifest["fairness"] = {
        "protected": [{"name": "age_band", "input": "features", "feature": "age_band"}],
        "min_group_size": MIN_GROUP,
    }
    manifest.update(extra)
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest))
    for version in ("1", "2"):
        os.symlink(demo / "credit-risk" / version, folder / version)


@pytest.fixture(scope="module")
def repository(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    _model_dir(demo_models, root / "credit-risk")
    return root


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(
    repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    async with running_server(
        tmp_path_factory.mktemp("data"),
        model_repository=repository,
        auth="required",
        admin_key=ADMIN,
        feedback_flush_seconds=0.2,
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.http_port}", timeout=60
    ) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tenants(http: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    assert (await http.post("/admin/plans", json={"name": "std"}, headers=_as(ADMIN))).is_success
    out: dict[str, dict[str, str]] = {}
    for name in ("acme", "globex"):
        made = await http.post(
            "/admin/tenants", json={"name": name, "plan": "std"}, headers=_as(ADMIN)
        )
        tenant_id = made.json()["id"]
        key = await http.post(
            f"/admin/tenants/{tenant_id}/keys",
            json={"name": "runner", "scopes": ["infer", "models:read"]},
            headers=_as(ADMIN),
        )
        out[name] = {"id": tenant_id, "key": key.json()["secret"]}
    return out


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def traffic(
    http: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> dict[str, np.ndarray[Any, Any]]:
    """acme's labelled predictions of version 2: age bands 0 and 1, and a few of band 4."""
    data = credit_risk.generate(1500, seed=31)
    band = data.features[:, 0]
    rows = np.concatenate(
        [np.flatnonzero(band == 0)[:150], np.flatnonzero(band == 1)[:150],
         np.flatnonzero(band == 4)[:SMALL_GROUP]]
    )  # fmt: skip
    features, labels = data.features[rows], data.labels[rows]
    key = tenants["acme"]["key"]
    predicted: list[int] = []
    items = []
    for start in range(0, len(rows), 64):
        chunk = features[start : start + 64]
        response = await http.post(
            "/v2/models/credit-risk/versions/2/infer",
            json={"inputs": [{"name": "features", "datatype": "FP32",
                              "shape": list(chunk.shape), "data": chunk.ravel().tolist()}]},
            headers=_as(key),
        )  # fmt: skip
        assert response.status_code == 200, response.text
        label_output = next(o for o in response.json()["outputs"] if o["name"] == "label")
        predicted.extend(label_output["data"])
        items.append(
            {
                "request_id": response.headers["x-request-id"],
                "labels": labels[start : start + 64].tolist(),
            }
        )
    answer = await http.post("/v1/feedback", json={"items": items}, headers=_as(key))
    assert answer.json() == {"accepted": len(rows)}, answer.text
    return {
        "labels": labels.astype(np.int64),
        "predicted": np.asarray(predicted, dtype=np.int64),
        "groups": np.asarray([str(int(b)) for b in features[:, 0]], dtype=object),
    }


async def _audit(http: httpx.AsyncClient, key: str, **params: str) -> httpx.Response:
    return await http.get("/admin/models/credit-risk/fairness", params=params, headers=_as(key))


async def test_the_audit_equals_fairlearn_on_the_same_predictions_and_labels(
    http: httpx.AsyncClient,
    tenants: dict[str, dict[str, str]],
    traffic: dict[str, np.ndarray[Any, Any]],
) -> None:
    response = await _audit(http, tenants["acme"]["key"])
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["tenant_id"] == tenants["acme"]["id"]
    assert report["min_group_size"] == MIN_GROUP
    assert not report["truncated"]
    [version] = report["versions"]
    assert version["version"] == "2"
    assert version["rows"] == len(traffic["labels"])
    [audit] = version["attributes"]
    assert audit["attribute"] == "age_band"
    assert audit["status"] == "ok"
    groups = {g["group"]: g for g in audit["groups"]}
    assert set(groups) == {"0", "1", "4"}
    # the small group is reported with its count, flagged, and given no figures
    assert groups["4"] == {
        "group": "4", "count": SMALL_GROUP, "sufficient": False, "positives": None,
        "selection_rate": None, "accuracy": None, "true_positive_rate": None,
        "false_positive_rate": None,
    }  # fmt: skip
    keep = traffic["groups"] != "4"
    y_true, y_pred, g = traffic["labels"][keep], traffic["predicted"][keep], traffic["groups"][keep]
    frame = MetricFrame(
        metrics={"sr": selection_rate, "acc": accuracy_score, "tpr": true_positive_rate},
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=g,
    )
    expected = frame.by_group.to_dict("index")
    for name in ("0", "1"):
        assert groups[name]["sufficient"] is True
        assert groups[name]["count"] == int((g == name).sum())
        assert groups[name]["selection_rate"] == pytest.approx(expected[name]["sr"], abs=1e-12)
        assert groups[name]["accuracy"] == pytest.approx(expected[name]["acc"], abs=1e-12)
        assert groups[name]["true_positive_rate"] == pytest.approx(expected[name]["tpr"], abs=1e-12)
    figures = {
        "demographic_parity_difference": demographic_parity_difference,
        "demographic_parity_ratio": demographic_parity_ratio,
        "equalized_odds_difference": equalized_odds_difference,
        "equal_opportunity_difference": equal_opportunity_difference,
    }
    for key, metric in figures.items():
        assert audit[key] == pytest.approx(
            metric(y_true, y_pred, sensitive_features=g), abs=1e-12
        ), key
    # the operator sees the same rows (acme's are the only ones)
    operator = (await _audit(http, ADMIN)).json()
    assert operator["tenant_id"] is None
    assert operator["versions"] == report["versions"]
    # a window after the traffic holds nothing
    later = (await _audit(http, ADMIN, since="2999-01-01")).json()
    assert later["versions"] == []


async def test_the_cli_prints_a_table_per_group(
    server: Server, traffic: dict[str, np.ndarray[Any, Any]]
) -> None:
    args = ["fairness", "credit-risk", "--url", f"http://127.0.0.1:{server.http_port}",
            "--api-key", ADMIN]  # fmt: skip
    runner = CliRunner()
    shown = await asyncio.to_thread(runner.invoke, cli_app, args)
    assert shown.exit_code == 0, shown.output
    assert "age_band" in shown.output
    assert "too few to judge" in shown.output  # band 4
    assert "demographic parity difference" in shown.output
    printed = await asyncio.to_thread(runner.invoke, cli_app, [*args, "--json"])
    assert printed.exit_code == 0, printed.output
    report = json.loads(printed.output)
    assert report["versions"][0]["rows"] == len(traffic["labels"])
    missing = await asyncio.to_thread(
        runner.invoke, cli_app, [*args[:1], "no-such-model", *args[2:]]
    )
    assert missing.exit_code == 1
    assert "404" in missing.output


async def test_a_tenant_audits_only_its_own_predictions(
    http: httpx.AsyncClient,
    tenants: dict[str, dict[str, str]],
    traffic: dict[str, np.ndarray[Any, Any]],
) -> None:
    globex = tenants["globex"]
    own = await _audit(http, globex["key"])
    assert own.status_code == 200
    assert own.json()["tenant_id"] == globex["id"]
    assert own.json()["versions"] == []  # acme's predictions are not globex's to read
    other = await _audit(http, globex["key"], tenant=tenants["acme"]["id"])
    assert other.status_code == 404
    # an operator may name one tenant
    named = await _audit(http, ADMIN, tenant=tenants["acme"]["id"])
    assert named.json()["versions"][0]["rows"] == len(traffic["labels"])


async def test_another_tenants_model_cannot_be_audited(
    http: httpx.AsyncClient,
    tenants: dict[str, dict[str, str]],
    repository: Path,
    demo_models: Path,
) -> None:
    _model_dir(demo_models, repository / "acme-risk", tenants=[tenants["acme"]["id"]])
    loaded = await http.post("/v2/repository/models/acme-risk/load", headers=_as(ADMIN))
    assert loaded.status_code == 200, loaded.text
    assert (await http.get(
        "/admin/models/acme-risk/fairness", headers=_as(tenants["acme"]["key"])
    )).status_code == 200  # fmt: skip
    denied = await http.get(
        "/admin/models/acme-risk/fairness", headers=_as(tenants["globex"]["key"])
    )
    assert denied.status_code == 404  # as if it did not exist
    unknown = await http.get("/admin/models/nope/fairness", headers=_as(ADMIN))
    assert unknown.status_code == 404
    assert denied.json()["error"] == unknown.json()["error"].replace("nope", "acme-risk")


async def test_bad_queries_answer_4xx(
    http: httpx.AsyncClient, tenants: dict[str, dict[str, str]]
) -> None:
    for params in ({"attribute": "income"}, {"since": "yesterday"},
                   {"since": "2026-02-01", "until": "2026-01-01"}):  # fmt: skip
        response = await _audit(http, ADMIN, **params)
        assert response.status_code == 400, (params, response.text)
        assert "error" in response.json()
    assert (await http.get("/admin/models/credit-risk/fairness")).status_code == 401


async def test_the_route_is_in_the_openapi_document(http: httpx.AsyncClient) -> None:
    document = (await http.get("/admin/openapi.json", headers=_as(ADMIN))).json()
    operation = document["paths"]["/admin/models/{model}/fairness"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"model", "version", "attribute"}
