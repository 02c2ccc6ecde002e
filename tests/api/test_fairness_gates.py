"""Fairness gates, gauges and alerts through a real server and the real credit-risk demo
model, on SQLite and PostgreSQL: a canary of version 2 whose live fairness (its predictions
joined with the feedback sent for them) breaks the manifest's gate is held while there is
too little feedback to judge, then rolled back with the reason in the deployment, its
``gate.fairness`` and the audit trail; with gates it keeps, it is promoted. The background
audit's gauges on ``/metrics`` equal the admin API's audit, and the built-in
alert rules on ``demographic_parity_difference`` fire on them above their threshold only."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelgate.demo import credit_risk
from modelgate.server import Server
from tests.api.conftest import running_server
from tests.contract.conftest import drop_postgres_database, new_postgres_database

ADMIN = "fairness-gates-admin-key-0123456789"
AUTH = {"authorization": f"Bearer {ADMIN}"}
MIN_GROUP = 30


def _repository(demo: Path, root: Path, gates: dict[str, Any]) -> Path:
    folder = root / "credit-risk"
    folder.mkdir(parents=True)
    manifest = yaml.safe_load((demo / "credit-risk" / "model.yaml").read_text())
    manifest["default_version"] = 1
    manifest["fairness"] = {
        "protected": [{"name": "age_band", "input": "features", "feature": "age_band"}],
        "min_group_size": MIN_GROUP,
        "gates": gates,
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest))
    for version in ("1", "2"):
        os.symlink(demo / "credit-risk" / version, folder / version)
    return root


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'modelgate.db'}"
        return
    url = new_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


async def poll(check: Callable[[], Awaitable[bool]], seconds: float = 60.0) -> None:
    """Wait until ``check()`` holds (generous: a decision, not a timing, is tested)."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


@asynccontextmanager
async def _serve(
    demo: Path, tmp_path: Path, database_url: str, gates: dict[str, Any]
) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    async with (
        running_server(
            tmp_path / "data",
            admin_key=ADMIN,
            model_repository=_repository(demo, tmp_path / "models", gates),
            database_url=database_url,
            deployment_refresh_seconds=0.2,
            feedback_flush_seconds=0.2,
            fairness_gate_interval_seconds=0.5,
            fairness_audit_interval_seconds=0.5,
            alert_interval_seconds=0.2,
            alert_rules=[
                {
                    "name": "ParityGap",
                    "metric": "demographic_parity_difference",
                    "threshold": 0.01,
                    "min_requests": 100,
                },
                {
                    "name": "ParityGapWide",
                    "metric": "demographic_parity_difference",
                    "threshold": 0.5,
                    "min_requests": 100,
                },
            ],
        ) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60) as client,
    ):
        yield server, client


async def _start_canary(http: httpx.AsyncClient) -> None:
    spec = {
        "default_version": 1,
        "canary": {
            "version": 2,
            "steps": [50, 100],
            "step_seconds": 1,
            "min_requests": 3,
            # only fairness is tested: latency on a shared machine must not decide
            "max_p95_ratio": 1000,
            "p95_slack_ms": 60000,
        },
    }
    answer = await http.put("/admin/models/credit-risk/deployment", json=spec, headers=AUTH)
    assert answer.status_code == 200, answer.text


async def _traffic(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Rows of every age band through the deployment (no version named), and the feedback
    items for them (not sent yet); at least one request reaches each version."""
    data = credit_risk.generate(2400, seed=41)
    items: list[dict[str, Any]] = []
    answered: set[str] = set()
    for start in range(0, len(data.labels), 80):
        chunk = data.features[start : start + 80]
        response = await http.post(
            "/v2/models/credit-risk/infer",
            json={"inputs": [{"name": "features", "datatype": "FP32",
                              "shape": list(chunk.shape), "data": chunk.ravel().tolist()}]},
            headers=AUTH,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        answered.add(response.headers["x-modelgate-model-version"])
        items.append(
            {
                "request_id": response.headers["x-request-id"],
                "labels": data.labels[start : start + 80].astype(np.int64).tolist(),
            }
        )
    assert answered == {"1", "2"}
    return items


async def _deployment(http: httpx.AsyncClient) -> dict[str, Any]:
    answer = await http.get("/admin/models/credit-risk/deployment", headers=AUTH)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_canary_breaking_a_fairness_gate_is_held_then_rolled_back(
    demo_models: Path, tmp_path: Path, database_url: str
) -> None:
    gates = {"max_demographic_parity_difference": 0.001}  # any real model breaks it
    async with _serve(demo_models, tmp_path, database_url, gates) as (_, http):
        await _start_canary(http)
        items = await _traffic(http)

        async def held() -> bool:
            gate = (await _deployment(http))["gate"]
            return bool(gate and gate["fairness"] and gate["fairness"]["state"] == "insufficient")

        # latency and errors pass, but without feedback there is nothing to judge: held
        await poll(held)
        found = await _deployment(http)
        assert found["canary"] is not None and found["default_version"] == 1
        assert found["gate"]["state"] == "waiting"
        assert "fairness not judged yet" in found["gate"]["reason"]

        sent = await http.post("/v1/feedback", json={"items": items}, headers=AUTH)
        assert sent.status_code == 200, sent.text

        async def rolled_back() -> bool:
            return (await _deployment(http))["canary"] is None

        await poll(rolled_back)
        found = await _deployment(http)
        assert found["default_version"] == 1
        assert "fairness gate broken: age_band: demographic_parity_difference" in found["note"]
        trail = await http.get("/admin/audit", params={"limit": 1000}, headers=AUTH)
        assert trail.status_code == 200, trail.text
        [entry] = [e for e in trail.json() if e["action"] == "deployment.rollback"]
        assert entry["actor"] == "system:canary-gate"
        evidence = entry["after"]["evidence"]["fairness"]
        assert evidence["state"] == "fail" and evidence["version"] == 2
        assert evidence["breaches"][0]["metric"] == "demographic_parity_difference"
        # the canary's own audit over its window says the same as the gate did
        audit = await http.get(
            "/admin/models/credit-risk/fairness",
            params={"version": "2", "since": evidence["since"]},
            headers=AUTH,
        )
        [attribute] = audit.json()["versions"][0]["attributes"]
        assert attribute["demographic_parity_difference"] == pytest.approx(
            evidence["breaches"][0]["value"], abs=1e-6
        )


async def test_a_canary_keeping_its_gates_is_promoted_and_gauges_and_alerts_follow(
    demo_models: Path, tmp_path: Path, database_url: str
) -> None:
    gates = {"max_demographic_parity_difference": 1.0, "min_demographic_parity_ratio": 0.0}
    async with _serve(demo_models, tmp_path, database_url, gates) as (server, http):
        await _start_canary(http)
        items = await _traffic(http)
        sent = await http.post("/v1/feedback", json={"items": items}, headers=AUTH)
        assert sent.status_code == 200, sent.text

        async def promoted() -> bool:
            found = await _deployment(http)
            return bool(found["canary"] is None and found["default_version"] == 2)

        await poll(promoted)
        assert "fairness gates kept on age_band" in (await _deployment(http))["note"]

        audit = (await http.get("/admin/models/credit-risk/fairness", headers=AUTH)).json()
        expected = {
            (v["version"], a["attribute"]): a for v in audit["versions"] for a in v["attributes"]
        }

        async def gauged() -> dict[tuple[str, str, str], float]:
            text = (await http.get("/metrics")).text
            return {
                (s.name, s.labels.get("version", ""), s.labels.get("group", "")): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name.startswith("modelgate_fairness_")
                and s.labels.get("model") == "credit-risk"
            }

        async def both_versions_gauged() -> bool:
            found = await gauged()
            return all(
                ("modelgate_fairness_demographic_parity_difference", v, "") in found
                for v, _ in expected
            )

        await poll(both_versions_gauged)
        found = await gauged()
        for (version, _), attribute in expected.items():
            for metric in ("demographic_parity_difference", "equalized_odds_difference"):
                assert found[(f"modelgate_fairness_{metric}", version, "")] == pytest.approx(
                    attribute[metric], abs=1e-9
                )
            for group in attribute["groups"]:
                key = (version, group["group"])
                assert found[("modelgate_fairness_group_rows", *key)] == group["count"]
                small = 0 if group["sufficient"] else 1
                assert found[("modelgate_fairness_group_too_small", *key)] == small
                if group["sufficient"]:
                    assert found[("modelgate_fairness_selection_rate", *key)] == pytest.approx(
                        group["selection_rate"]
                    )

        # the demo data gives age band a real effect (about 0.05 between bands on version
        # 2): a rule with a lower threshold fires on it, one with a higher does not
        alerts = server.components.alerts  # type: ignore[union-attr]
        assert alerts is not None

        async def firing() -> bool:
            return ("ParityGap", "credit-risk") in alerts.firing

        await poll(firing)
        assert ("ParityGapWide", "credit-risk") not in alerts.firing
