"""``modelgate profile``: a version without a reference profile gets one from a sample of
its training data, and the server then monitors it (no drift for traffic like the sample,
drift for shifted traffic) and scores its inputs for anomalies. The credit-risk demo model,
copied without its ``reference.json``; the sample is freshly generated training data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from modelgate import cli
from modelgate.demo.credit_risk import CATEGORICAL_FEATURES, FEATURE_NAMES, generate
from tests.api.conftest import running_server

runner = CliRunner()


@pytest.fixture
def repository(demo_models: Path, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(demo_models / "credit-risk", models / "credit-risk")
    for version in ("1", "2"):
        (models / "credit-risk" / version / "reference.json").unlink()
    return models


def _profile(repository: Path, *args: str) -> str:
    result = runner.invoke(
        cli.app, ["profile", str(repository / "credit-risk"), "2", *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.asyncio
async def test_a_profile_made_from_a_sample_drives_monitoring_and_anomaly_checks(
    repository: Path, tmp_path: Path
) -> None:
    sample = generate(3000, 11)
    np.savez(tmp_path / "sample.npz", features=sample.features.astype(np.float32))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.8, "auc": 0.85}))
    categorical = [arg for name in CATEGORICAL_FEATURES for arg in ("--categorical", name)]
    output = _profile(
        repository, "--data", str(tmp_path / "sample.npz"), "--metrics", str(metrics), *categorical
    )
    assert "annual_income" in output
    document = json.loads((repository / "credit-risk" / "2" / "reference.json").read_text())
    assert document["n_rows"] == 3000
    assert set(document["features"]) == set(FEATURE_NAMES)
    assert "categories" in document["features"]["age_band"]
    assert set(document["outputs"]) == {"label", "probabilities"}
    assert document["validation_metrics"] == {"accuracy": 0.8, "auc": 0.85}

    admin = "profile-test-admin-key-0123456789"
    async with running_server(
        tmp_path / "data", model_repository=repository, admin_key=SecretStr(admin)
    ) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        async with httpx.AsyncClient(base_url=base) as client:
            live = generate(400, 12).features
            for start in range(0, 400, 8):
                rows = live[start : start + 8]
                body = {
                    "inputs": [
                        {
                            "name": "features",
                            "datatype": "FP32",
                            "shape": list(rows.shape),
                            "data": rows.ravel().tolist(),
                        }
                    ]
                }
                answer = await client.post("/v2/models/credit-risk/versions/2/infer", json=body)
                assert answer.status_code == 200, answer.text
            monitored = await client.get(
                "/admin/models/credit-risk/monitoring",
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert monitored.status_code == 200, monitored.text
            report = monitored.json()
            v2 = next(v for v in report["versions"] if v["version"] == "2")
            assert v2["status"] in ("ok", "watch"), v2
            assert not v2["drift"]
            # far outside the sample's range: the new profile flags it
            odd = live[:1].copy()
            odd[0, FEATURE_NAMES.index("annual_income")] = 1e9
            body = {
                "inputs": [
                    {
                        "name": "features",
                        "datatype": "FP32",
                        "shape": [1, 12],
                        "data": odd.ravel().tolist(),
                    }
                ]
            }
            flagged = await client.post("/v2/models/credit-risk/versions/2/infer", json=body)
            assert flagged.headers.get("x-modelgate-anomaly") is not None, flagged.text


def test_a_csv_sample_and_the_refusals(repository: Path, tmp_path: Path) -> None:
    sample = generate(500, 3).features
    path = tmp_path / "sample.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *FEATURE_NAMES])
        writer.writerows([[i, *row] for i, row in enumerate(sample.tolist())])
    _profile(repository, "--data", str(path))
    document = json.loads((repository / "credit-risk" / "2" / "reference.json").read_text())
    assert document["n_rows"] == 500
    # an existing profile is kept unless --force
    again = runner.invoke(
        cli.app, ["profile", str(repository / "credit-risk"), "2", "--data", str(path)]
    )
    assert again.exit_code == 2 and "--force" in again.output
    # a header without the model's features, an unknown version, a wrong suffix
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    for args, message in (
        (["2", "--data", str(bad), "--force"], "lacks the features"),
        (["9", "--data", str(path)], "no version 9"),
        (["2", "--data", str(tmp_path / "x.txt"), "--force"], ".npz or a .csv"),
    ):
        result = runner.invoke(cli.app, ["profile", str(repository / "credit-risk"), *args])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
