"""The learning loop end to end, against a real ``modelgate serve`` on SQLite and on
PostgreSQL: traffic whose label relationship has shifted, feedback for it, ``POST
/admin/models/credit-risk/learn``, and a new version that scores better on the shifted data,
registered with its lineage and promoted by its canary while every request succeeds; and a
worse candidate that is never registered. Consent and erasure are honoured on the way: a
tenant that does not consent and an erased subject leave nothing in the data set. On SQLite
also: a candidate that breaks the manifest's `fairness.gates`, never registered; the README's
five-line loop run as written on the demo manifest as built; and the label-count and drift
triggers starting runs by themselves. Every test starts from the demo's own `learning`
section; the others change only what they are about (the canary's pace, the trainer,
triggers, fairness gates)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from modelgate.demo.credit_risk import generate
from tests.conftest import ROOT
from tests.contract.conftest import drop_postgres_database, new_postgres_database
from tests.e2e.conftest import (
    ADMIN_KEY,
    AUTH,
    RunningServer,
    run_cli,
    start_server,
    stop_server,
)

PAYLOAD_KEY = base64.b64encode(b"L" * 32).decode()
ROWS_PER_REQUEST = 20
INCOME = 1  # the column of annual_income


def _repository(
    demo_models: Path,
    folder: Path,
    trainer: str | None = None,
    triggers: dict[str, Any] | None = None,
    fairness_gates: dict[str, Any] | None = None,
) -> Path:
    """A copy of the demo repository, its credit-risk manifest as built (payload logging
    allowed, its `learning` section) but for a canary that steps every second, and what
    the test names: another trainer, triggers, fairness gates."""
    shutil.copytree(demo_models / "credit-risk", folder / "credit-risk")
    path = folder / "credit-risk" / "model.yaml"
    manifest = yaml.safe_load(path.read_text())
    assert manifest["payload_logging"]["enabled"] is True  # the demo allows it, as built
    learning = manifest["learning"]
    assert learning["trainer"] == "modelgate.learning.trainers.credit_risk:train"
    learning["rollout"] = {"steps": [50, 100], "step_seconds": 1, "min_requests": 10}
    if trainer is not None:
        learning["trainer"] = trainer
    if triggers is not None:
        learning["triggers"] = triggers
    if fairness_gates is not None:
        manifest["fairness"]["gates"] = fairness_gates
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'learning.db'}"
        return
    url = new_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


def _serve(repository: Path, workdir: Path, database: str, **settings: str) -> RunningServer:
    return start_server(
        repository,
        workdir,
        env={
            "MODELGATE_DATABASE_URL": database,
            "MODELGATE_PAYLOAD_KEYS": json.dumps({"k1": PAYLOAD_KEY}),
            "MODELGATE_PAYLOAD_PSEUDONYM_KEY": "pseudonym-" + "p" * 22,
            "MODELGATE_PAYLOAD_FLUSH_SECONDS": "0.2",
            "MODELGATE_FEEDBACK_FLUSH_SECONDS": "0.2",
            "MODELGATE_PAYLOAD_CONSENT_REFRESH_SECONDS": "0.2",
            "MODELGATE_DEPLOYMENT_REFRESH_SECONDS": "0.3",
            # the trainer's process imports this tree's code and the tests' trainer
            "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
            **settings,
        },
    )


def _tenant(client: httpx.Client, name: str, consents: bool) -> str:
    made = client.post("/admin/tenants", json={"name": name, "plan": "std"}, headers=AUTH)
    assert made.status_code == 201, made.text
    tenant = made.json()["id"]
    key = client.post(
        f"/admin/tenants/{tenant}/keys",
        json={"name": "app", "scopes": ["infer", "models:read"]},
        headers=AUTH,
    )
    assert key.status_code == 201, key.text
    if consents:
        consent = client.put(
            f"/admin/tenants/{tenant}/payload-logging", json={"enabled": True}, headers=AUTH
        )
        assert consent.status_code == 200, consent.text
    return str(key.json()["secret"])


def _send(
    client: httpx.Client,
    key: str,
    features: np.ndarray[Any, Any],
    labels: np.ndarray[Any, Any],
    prefix: str,
    subject: str | None = None,
) -> None:
    """The rows as inferences of ROWS_PER_REQUEST rows, each then labelled by feedback."""
    headers = {"Authorization": f"Bearer {key}"}
    items = []
    for start in range(0, len(features), ROWS_PER_REQUEST):
        rows = features[start : start + ROWS_PER_REQUEST]
        request_id = f"{prefix}-{start}"
        body: dict[str, Any] = {
            "id": request_id,
            "inputs": [
                {"name": "features", "datatype": "FP32", "shape": list(rows.shape),
                 "data": rows.reshape(-1).tolist()}
            ],
        }  # fmt: skip
        if subject is not None:
            body["parameters"] = {"subject": subject}
        answer = client.post("/v2/models/credit-risk/versions/2/infer", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        labelled = labels[start : start + ROWS_PER_REQUEST].tolist()
        items.append({"request_id": request_id, "labels": labelled})
    time.sleep(0.5)  # the predictions are written by the recorder's next flush
    for start in range(0, len(items), 50):
        sent = client.post(
            "/v1/feedback", json={"items": items[start : start + 50]}, headers=headers
        )
        assert sent.status_code == 200, sent.text


def _learn(client: httpx.Client) -> dict[str, Any]:
    started = client.post("/admin/models/credit-risk/learn", headers=AUTH)
    assert started.status_code == 202, started.text
    run = started.json()
    assert run["status"] == "running"
    deadline = time.monotonic() + 90
    while run["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.3)
        found = client.get(f"/admin/models/credit-risk/learn/{run['id']}", headers=AUTH)
        assert found.status_code == 200, found.text
        run = found.json()
    return run


def _shifted(n: int, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Applicants whose default now follows income the other way round: the richer half
    defaults. The serving version learned the opposite, so it ranks them backwards."""
    data = generate(n, seed)
    income = data.features[:, INCOME]
    return data.features, (income > np.median(income)).astype(np.int64)


def test_a_shifted_relationship_is_learned_and_promoted(
    demo_models: Path, tmp_path: Path, database: str
) -> None:
    repository = _repository(demo_models, tmp_path / "models")
    server = _serve(repository, tmp_path / "work", database)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/admin/plans", json={"name": "std"}, headers=AUTH).is_success
            consenting = _tenant(client, "acme", consents=True)
            refusing = _tenant(client, "globex", consents=False)
            time.sleep(0.5)  # the payload logger re-reads consent settings
            features, labels = _shifted(1000, seed=7)
            _send(client, consenting, features[:800], labels[:800], "acme")
            _send(client, consenting, features[800:900], labels[800:900], "erased", "carol")
            _send(client, refusing, features[900:], labels[900:], "globex")
            erased = client.delete("/admin/subjects/carol", headers=AUTH)
            assert erased.status_code == 200, erased.text

            traffic = _Traffic(server.url, consenting, features)
            traffic.start()  # requests naming no version, through the whole loop
            try:
                run = _learn(client)
                assert run["status"] == "succeeded", json.dumps(run, indent=1)[:4000]
                report = run["report"]
                # the data set: acme's consented rows only, carol's erased, globex's without inputs
                assert report["dataset"]["labelled_rows_in_window"] == 900
                assert report["dataset"]["rows"] == 800
                assert report["sanitization"]["rows_left_out"] == {"no consented inputs": 100}
                assert report["sanitization"]["columns_removed"] == {
                    "features": {"age_band": "sensitive"}
                }
                assert {"request_id", "subject", "tenant_id"} <= set(
                    report["sanitization"]["fields_dropped"]
                )
                assert report["training"]["answer"]["features_used"].count("age_band") == 0
                evaluation = report["evaluation"]
                assert evaluation["passed"] is True
                candidate = evaluation["candidate"]["metrics"]
                serving = evaluation["serving"]["metrics"]
                assert candidate["auc"] > serving["auc"] + 0.3, evaluation
                assert candidate["accuracy"] > serving["accuracy"]
                assert evaluation["candidate"]["fairness"][0]["attribute"] == "age_band"
                assert run["version"] == 3 and run["serving_version"] == 2

                card = client.get("/admin/models/credit-risk/versions/3/card", headers=AUTH)
                assert card.status_code == 200, card.text
                lineage = card.json()["lineage"]
                assert lineage["origin"] == "learning-loop"
                assert lineage["dataset"]["sha256"] == report["dataset"]["sha256"]
                assert lineage["sanitization"]["columns_removed"]["features"] == {
                    "age_band": "sensitive"
                }
                assert lineage["parent"]["version"] == 2
                assert lineage["started_by"].startswith("admin:bootstrap-admin (manual)")
                assert lineage["evaluation"]["metrics"] == candidate
                shown = run_cli(
                    {"MODELGATE_URL": server.url, "MODELGATE_API_KEY": ADMIN_KEY, "COLUMNS": "200"},
                    "models", "card", "credit-risk", "--version", "3",
                )  # fmt: skip
                assert "learning-loop" in shown and "age_band" in shown, shown
                # a tenant's key reads the card without any figure of the traffic
                mine = client.get(
                    "/admin/models/credit-risk/versions/3/card",
                    headers={"Authorization": f"Bearer {consenting}"},
                ).json()
                assert mine["scope"] == "tenant" and mine["lineage"]["fairness"] is None
                assert mine["lineage"]["dataset"]["rows"] is None
                assert mine["lineage"]["dataset"]["sha256"] == report["dataset"]["sha256"]
                assert set(mine["lineage"]["evaluation"]["metrics"].values()) == {None}
                # no training data outlives the run
                runs = repository / "credit-risk" / ".learning"
                assert (runs / run["id"] / "train" / "trainer.log").is_file()
                left = [p for p in runs.rglob("*") if p.name in ("train.npz", "train-text.jsonl")]
                assert left == [], left

                deployment = _until_promoted(client)
            finally:
                traffic.stop()
            assert traffic.answered > 50 and traffic.failures == [], traffic.failures[:3]
            assert deployment["default_version"] == 3 and deployment["canary"] is None
            assert traffic.versions >= {"2", "3"}  # both answered during the canary

            trail = client.get("/admin/audit", params={"limit": 200}, headers=AUTH).json()
            actions = [entry["action"] for entry in trail]
            assert "learning.start" in actions and "learning.succeeded" in actions
    finally:
        stop_server(server)


def _until_promoted(client: httpx.Client) -> dict[str, Any]:
    """The deployment once its canary ended (promoted or rolled back), or after 45 s."""
    deadline = time.monotonic() + 45
    deployment: dict[str, Any] = {}
    while time.monotonic() < deadline:
        deployment = client.get("/admin/models/credit-risk/deployment", headers=AUTH).json()
        if deployment.get("canary") is None:
            break
        time.sleep(0.3)
    return deployment


class _Traffic(threading.Thread):
    """Requests naming no version, one after another, each with its own sticky key (so
    both arms of a canary get some), until stopped; what failed and which versions
    answered."""

    def __init__(self, url: str, key: str, features: np.ndarray[Any, Any]) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.features = url, key, features
        self.failures: list[str] = []
        self.versions: set[str] = set()
        self.answered = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop_event.is_set():
                row = self.features[self.answered % len(self.features)]
                body = {
                    "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 12],
                                "data": row.tolist()}],
                    "parameters": {"subject": f"caller-{self.answered}", "consent": False},
                }  # fmt: skip
                answer = client.post("/v2/models/credit-risk/infer", json=body, headers=headers)
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code} {answer.text}")
                else:
                    self.versions.add(answer.json()["model_version"])
                self.answered += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def test_a_worse_candidate_is_never_registered(
    demo_models: Path, tmp_path: Path, database: str
) -> None:
    repository = _repository(
        demo_models, tmp_path / "models", "tests.e2e.learning_trainers:shuffled_labels"
    )
    server = _serve(repository, tmp_path / "work", database)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/admin/plans", json={"name": "std"}, headers=AUTH).is_success
            key = _tenant(client, "acme", consents=True)
            time.sleep(0.5)
            data = generate(600, seed=11)  # the relationship the serving version knows
            _send(client, key, data.features, data.labels, "acme")
            done = subprocess.run(
                [sys.executable, "-m", "modelgate", "learn", "credit-risk", "--json"],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "MODELGATE_URL": server.url, "MODELGATE_API_KEY": ADMIN_KEY},
                check=False,
            )
            assert done.returncode == 1, done.stdout + done.stderr  # rejected: exit status 1
            run = json.loads(done.stdout)
            assert run["status"] == "rejected", json.dumps(run, indent=1)[:4000]
            gates = {g["gate"]: g for g in run["report"]["evaluation"]["gates"]}
            assert gates["auc_drop_max"]["passed"] is False
            assert run["version"] is None
            kept = repository / "credit-risk" / run["report"]["candidate_kept"] / "model.onnx"
            assert kept.is_file()
            versions = client.get("/v2/models/credit-risk", headers=AUTH).json()["versions"]
            assert versions == ["1", "2"]
            assert sorted(
                p.name for p in (repository / "credit-risk").iterdir() if p.name.isdigit()
            ) == ["1", "2"]
            missing = client.get("/admin/models/credit-risk/deployment", headers=AUTH)
            assert missing.status_code == 404  # no canary was started
    finally:
        stop_server(server)


def test_enough_new_labels_start_a_run_by_themselves(demo_models: Path, tmp_path: Path) -> None:
    repository = _repository(
        demo_models, tmp_path / "models", triggers={"labels": 300, "cooldown_seconds": 0}
    )
    database = f"sqlite+aiosqlite:///{tmp_path / 'learning.db'}"
    server = _serve(repository, tmp_path / "work", database, MODELGATE_LEARNING_TRIGGER_SECONDS="1")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/admin/plans", json={"name": "std"}, headers=AUTH).is_success
            key = _tenant(client, "acme", consents=True)
            time.sleep(0.5)
            features, labels = _shifted(200, seed=3)
            _send(client, key, features, labels, "first")
            time.sleep(2.5)  # two rounds of the trigger with 200 new labels: nothing starts
            assert client.get("/admin/models/credit-risk/learn", headers=AUTH).json() == []
            features, labels = _shifted(200, seed=4)
            _send(client, key, features, labels, "second")
            runs: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = client.get("/admin/models/credit-risk/learn", headers=AUTH).json()
                if runs and runs[0]["status"] != "running":
                    break
                time.sleep(0.5)
            assert len(runs) == 1, runs
            assert runs[0]["trigger"] == "labels"
            assert runs[0]["started_by"] == "admin:learning-trigger"
            assert runs[0]["status"] == "succeeded", runs[0]
            env = {"MODELGATE_URL": server.url, "MODELGATE_API_KEY": ADMIN_KEY, "COLUMNS": "200"}
            shown = run_cli(env, "learn", "credit-risk", "--run", runs[0]["id"])
            assert f"run {runs[0]['id']}: succeeded" in shown, shown
            assert "pass auc_drop_max" in shown and "held-out rows" in shown, shown
            listed = run_cli(env, "learn", "credit-risk", "--runs")
            assert runs[0]["id"] in listed and "labels" in listed, listed
            trail = client.get("/admin/audit", params={"limit": 200}, headers=AUTH).json()
            assert any(
                e["action"] == "learning.start" and e["actor"] == "admin:learning-trigger"
                for e in trail
            )
    finally:
        stop_server(server)


def test_a_candidate_that_breaks_a_fairness_gate_is_never_registered(
    demo_models: Path, tmp_path: Path
) -> None:
    """The manifest's `fairness.gates` (the canary's) judge the candidate on the held-out
    rows: on the shifted traffic the retrained model is far better on the task, but it
    selects the richer, older age bands far more often, so it is kept aside."""
    repository = _repository(
        demo_models, tmp_path / "models", fairness_gates={"max_demographic_parity_difference": 0.1}
    )
    database = f"sqlite+aiosqlite:///{tmp_path / 'learning.db'}"
    server = _serve(repository, tmp_path / "work", database)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/admin/plans", json={"name": "std"}, headers=AUTH).is_success
            key = _tenant(client, "acme", consents=True)
            time.sleep(0.5)
            features, labels = _shifted(800, seed=7)
            _send(client, key, features, labels, "acme")
            run = _learn(client)
            assert run["status"] == "rejected", json.dumps(run, indent=1)[:4000]
            evaluation = run["report"]["evaluation"]
            gates = {g["gate"]: g for g in evaluation["gates"]}
            assert gates["auc_drop_max"]["passed"] is True  # better on the task ...
            fairness = gates["fairness"]  # ... but not fair enough
            assert fairness["passed"] is False and fairness["candidate"] == "fail", fairness
            assert fairness["limit"]["max_demographic_parity_difference"] == 0.1
            assert "age_band: demographic_parity_difference" in fairness["detail"]
            verdict = evaluation["candidate"]["fairness_gates"]
            assert verdict["breaches"][0]["value"] > 0.1
            # the serving version's verdict on the same rows is reported beside it: it keeps
            # the limit; only the candidate's decides
            assert evaluation["serving"]["fairness_gates"]["state"] == "pass"
            assert run["version"] is None and "fairness gate broken" in run["message"]
            versions = client.get("/v2/models/credit-risk", headers=AUTH).json()["versions"]
            assert versions == ["1", "2"]
            kept = repository / "credit-risk" / run["report"]["candidate_kept"] / "model.onnx"
            assert kept.is_file()
            assert (
                client.get("/admin/models/credit-risk/deployment", headers=AUTH).status_code == 404
            )
    finally:
        stop_server(server)


def _readme_loop() -> str:
    """The README's five-line loop: the bash block that runs `modelgate learn`."""
    text = (ROOT / "README.md").read_text()
    for block in text.split("```bash\n")[1:]:
        body = block.split("```", 1)[0]
        if "modelgate learn credit-risk" in body:
            return body
    raise AssertionError("README.md shows no `modelgate learn credit-risk` block")


def test_the_readmes_loop_runs_as_written_on_the_demo_manifest(
    demo_models: Path, tmp_path: Path
) -> None:
    """The README's loop, its commands run as written by bash (what the docs test would run,
    addresses substituted the same way), against the demo repository as built: its manifest
    is not changed at all. The quick start's variables are made the way it makes them."""
    folder = tmp_path / "models"
    shutil.copytree(demo_models / "credit-risk", folder / "credit-risk")
    assert (folder / "credit-risk" / "model.yaml").read_bytes() == (
        demo_models / "credit-risk" / "model.yaml"
    ).read_bytes()
    workdir = tmp_path / "work"
    database = f"sqlite+aiosqlite:///{tmp_path / 'learning.db'}"
    server = _serve(folder, workdir, database)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/admin/plans", json={"name": "basic"}, headers=AUTH).is_success
            made = client.post(
                "/admin/tenants", json={"name": "acme", "plan": "basic"}, headers=AUTH
            )
            tenant = made.json()["id"]
            key = client.post(
                f"/admin/tenants/{tenant}/keys",
                json={"name": "app", "scopes": ["infer", "models:read", "usage:read"]},
                headers=AUTH,
            ).json()["secret"]
        (workdir / ".venv").symlink_to(ROOT / ".venv")
        port = server.url.rsplit(":", 1)[1]
        script = _readme_loop().replace("localhost:8000", f"127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-c", 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
             + script],
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200",
                 "MODELGATE_URL": server.url, "MODELGATE_ADMIN_KEY": ADMIN_KEY,
                 "MODELGATE_API_KEY": ADMIN_KEY, "TENANT": tenant, "KEY": key},
            capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        out = done.stdout
        assert "600 applicants" in out, out
        assert "run run_" in out and ": succeeded" in out and "version 3 is a canary" in out, out
        assert "learning-loop" in out and "age_band" in out, out  # the card's lineage
        with httpx.Client(base_url=server.url, timeout=30) as client:
            deployment = client.get("/admin/models/credit-risk/deployment", headers=AUTH).json()
            assert deployment["canary"]["version"] == 3, deployment
    finally:
        stop_server(server)


def test_a_drift_alert_starts_a_run_by_itself(demo_models: Path, tmp_path: Path) -> None:
    """A real server, a `feature_drift` alert rule and `triggers.on_drift`: labelled traffic
    from the demo's own distribution starts nothing; inputs whose income tripled fire the
    alert, and the next trigger check starts a run audited as the trigger's."""
    repository = _repository(
        demo_models, tmp_path / "models", triggers={"on_drift": True, "cooldown_seconds": 0}
    )
    rules = [{"name": "CreditRiskDrift", "metric": "feature_drift", "threshold": 0.25,
              "window_seconds": 600, "model": "credit-risk"}]  # fmt: skip
    database = f"sqlite+aiosqlite:///{tmp_path / 'learning.db'}"
    server = _serve(
        repository, tmp_path / "work", database,
        MODELGATE_LEARNING_TRIGGER_SECONDS="1", MODELGATE_ALERT_INTERVAL_SECONDS="0.5",
        MODELGATE_ALERT_RULES=json.dumps(rules),
    )  # fmt: skip
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/admin/plans", json={"name": "std"}, headers=AUTH).is_success
            key = _tenant(client, "acme", consents=True)
            time.sleep(0.5)
            features, labels = _shifted(400, seed=5)  # outcomes shifted, inputs as trained on
            _send(client, key, features, labels, "labelled")
            time.sleep(2.5)  # rounds of the alert rules and of the trigger: no drift, no run
            assert client.get("/admin/models/credit-risk/learn", headers=AUTH).json() == []
            drifted = generate(600, seed=6).features.copy()
            drifted[:, INCOME] *= 3
            headers = {"Authorization": f"Bearer {key}"}
            for start in range(0, len(drifted), ROWS_PER_REQUEST):
                rows = drifted[start : start + ROWS_PER_REQUEST]
                body = {
                    "inputs": [
                        {
                            "name": "features",
                            "datatype": "FP32",
                            "shape": list(rows.shape),
                            "data": rows.reshape(-1).tolist(),
                        }
                    ]
                }
                answer = client.post("/v2/models/credit-risk/infer", json=body, headers=headers)
                assert answer.status_code == 200, answer.text
            runs: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = client.get("/admin/models/credit-risk/learn", headers=AUTH).json()
                if runs and runs[-1]["status"] != "running":
                    break
                time.sleep(0.5)
            assert runs, "no run started"
            first = runs[-1]  # newest first: the first run is the last
            assert first["trigger"] == "drift", first
            assert first["started_by"] == "admin:learning-trigger"
            assert first["status"] == "succeeded", first
            trail = client.get("/admin/audit", params={"limit": 200}, headers=AUTH).json()
            assert any(
                e["action"] == "learning.start" and e["actor"] == "admin:learning-trigger"
                for e in trail
            )
    finally:
        stop_server(server)
