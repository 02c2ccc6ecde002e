"""A version's ``reference.json`` linked out of its model's folder, through the real server
and the CLI: the server serves the version unchecked and reports it without a reference
(its sibling, whose folder is a link placed elsewhere, is checked and monitored as usual),
its log names no host path and leaks nothing of the file; ``modelgate profile`` refuses to
write through the link."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from modelgate import cli
from modelgate.boot.serving import build_components
from modelgate.demo import credit_risk
from modelgate.settings import Settings

ADMIN = "admin-" + "s" * 24
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
MODEL = "credit-risk"
SECRET = "s3cr3t-host-content"
GARBAGE = [2, 9e9, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 7]  # income, home_ownership


def repository(demo: Path, root: Path, outside: Path) -> Path:
    """credit-risk with version 1 a link to the demo's folder and version 2 a copy whose
    reference.json is a link to ``outside`` (a valid profile, marked)."""
    folder = root / MODEL
    folder.mkdir(parents=True)
    shutil.copy(demo / MODEL / "model.yaml", folder / "model.yaml")
    os.symlink(demo / MODEL / "1", folder / "1")
    (folder / "2").mkdir()
    for name in ("model.onnx", "version.yaml"):
        shutil.copy(demo / MODEL / "2" / name, folder / "2" / name)
    document = json.loads((demo / MODEL / "2" / "reference.json").read_text())
    document["source"] = SECRET
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_text(json.dumps(document))
    os.symlink(outside, folder / "2" / "reference.json")
    return root


def body(rows: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [len(rows), len(rows[0])],
                "data": [v for row in rows for v in row],
            }
        ]
    }


async def test_the_server_serves_a_version_whose_profile_is_linked_out_unchecked(
    demo_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = repository(demo_models, tmp_path / "repo", tmp_path / "elsewhere" / "reference.json")
    caplog.set_level(logging.INFO)
    components = build_components(
        Settings(model_repository=root, data_dir=tmp_path / "data", admin_key=ADMIN)
    )
    await components.open()
    await components.start()
    try:
        transport = httpx.ASGITransport(app=components.rest_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            typical = credit_risk.generate(100, seed=4).features.tolist()
            answers = {}
            for version in ("1", "2"):
                url = f"/v2/models/{MODEL}/versions/{version}/infer"
                for start in range(0, 100, 50):
                    ok = await client.post(
                        url, json=body(typical[start : start + 50]), headers=AS_ADMIN
                    )
                    assert ok.status_code == 200, ok.text
                answer = await client.post(url, json=body([GARBAGE]), headers=AS_ADMIN)
                assert answer.status_code == 200, answer.text
                answers[version] = answer.json().get("parameters") or {}
            report = await client.get(f"/admin/models/{MODEL}/monitoring", headers=AS_ADMIN)
            assert report.status_code == 200, report.text
            statuses = {r["version"]: r["status"] for r in report.json()["versions"]}
    finally:
        await components.close()

    assert answers["1"]["anomalous"] is True  # the linked version folder is read
    assert "anomaly_score" not in answers["2"]  # the linked-out profile is not
    assert statuses["2"] == "no reference" and statuses["1"] != "no reference"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(
        f"'reference.json' of model '{MODEL}' version 2 points outside" in m for m in warnings
    )
    assert str(tmp_path) not in caplog.text and SECRET not in caplog.text


def test_profile_refuses_to_write_through_a_link_out_of_the_model_folder(
    demo_models: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "reference.json"
    root = repository(demo_models, tmp_path / "repo", outside)
    before = outside.read_text()
    sample = tmp_path / "sample.npz"
    np.savez(sample, features=credit_risk.generate(200, 3).features)
    result = CliRunner().invoke(
        cli.app, ["profile", str(root / MODEL), "2", "--data", str(sample), "--force"]
    )
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert f"'reference.json' of model '{MODEL}' version 2 points outside" in output
    assert str(tmp_path / "elsewhere") not in output and SECRET not in output
    assert outside.read_text() == before
