"""``GET /admin/models/{model}[/versions/{version}]/card`` and ``modelgate models card``
through the real server, on a copy of the demo repository whose lineage records the demo
build's own writer made (modelgate/demo/provenance.py); MiniLM's artifacts are links to the
shared build, not copies. A tenant-only copy of credit-risk has no lineage record, another
one a record whose artifact hash no longer matches, another one a broken record."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from typer.testing import CliRunner

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.cli import root as cli
from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.demo import minilm
from modelgate.demo.provenance import write_credit_risk_lineage, write_minilm_lineage
from modelgate.repository.lineage import LINEAGE_FILE, lineage_record, write_lineage
from modelgate.settings import Settings
from tests.unit.adapters.test_lineage import trained_versions

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "c" * 24
MINILM = minilm.MODEL_NAME


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def repository(demo_models: Path, root: Path) -> Path:
    models = root / "models"
    credit = models / "credit-risk"
    shutil.copytree(demo_models / "credit-risk", credit)
    for number in (1, 2):  # whatever the shared build holds, the records are made here
        (credit / str(number) / LINEAGE_FILE).unlink(missing_ok=True)
    write_credit_risk_lineage(credit, trained_versions(credit), recipe="test")

    mini = models / MINILM
    mini.mkdir()
    manifest = yaml.safe_load((demo_models / MINILM / "model.yaml").read_text())
    manifest["preload"] = False  # the card of a version that is not loaded
    (mini / "model.yaml").write_text(yaml.safe_dump(manifest))
    for number in (1, 2):
        (mini / str(number)).mkdir()
        (mini / str(number) / "model.onnx").symlink_to(
            demo_models / MINILM / str(number) / "model.onnx"
        )
        shutil.copy(demo_models / MINILM / str(number) / "version.yaml", mini / str(number))
    write_minilm_lineage(
        mini,
        [minilm.VersionCheck(1, 0.9999, 1.0), minilm.VersionCheck(2, 0.99, 0.995)],
        "test",
        minilm.WEIGHTS_PACKAGE,
    )

    def variant(name: str, tenants: list[str] | None = None) -> Path:
        folder = models / name
        folder.mkdir()
        shutil.copytree(credit / "1", folder / "1")
        manifest = yaml.safe_load((credit / "model.yaml").read_text())
        manifest.update(preload=False, default_version=1)
        if tenants is not None:
            manifest["tenants"] = tenants
        (folder / "model.yaml").write_text(yaml.safe_dump(manifest))
        return folder / "1"

    (variant("acme-risk", ["ten_acme"]) / LINEAGE_FILE).unlink()
    tampered = variant("tampered-risk") / "model.onnx"
    tampered.write_bytes(tampered.read_bytes() + b"\0")  # the record keeps the old hash
    (variant("broken-risk") / LINEAGE_FILE).write_text("{not json")
    learned = variant("learned-risk")  # as the learning loop records a version (runs.py)
    write_lineage(learned, lineage_record(**LEARNED, artifact=learned / "model.onnx"))
    return models


#: a learned version's lineage: its figures come from every tenant's traffic
LEARNED: dict[str, Any] = {
    "origin": "learning-loop",
    "builder": {"name": "modelgate learning loop", "version": "test"},
    "dataset": {"name": "learned-risk feedback", "rows": 731, "sha256": "d" * 64,
                "labelled_rows_in_window": 977, "tenants": 3, "bytes": 11696,
                "window": {"since": "2026-11-01T00:00:00+00:00"}, "holdout_sha256": "e" * 64},
    "sanitization": {"rows_read": 977, "rows_kept": 975, "rows_left_out": {"duplicate": 2},
                     "fields_dropped": ["tenant_id"], "columns_removed": {"x": {"age": "s"}},
                     "redactions": {"email": 41}},
    "training": {"trainer": "pkg.mod:train", "run": "run_x", "seconds": 3.5,
                 "answer": {"class_counts": [400, 331]}},
    "evaluation": {"against": "version 1", "metrics": {"auc": 0.8123},
                   "candidate": {"auc": 0.8123}, "serving": {"auc": 0.8011},
                   "gates": [{"gate": "auc_drop_max", "limit": 0.01, "candidate": 0.8123,
                              "serving": 0.8011, "passed": True, "detail": "auc 0.8123"}]},
    "fairness": {"candidate": {"age": {"groups": {"0": {"count": 97, "selection_rate": 0.31}}}}},
}  # fmt: skip


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("cards")
    models = repository(demo_models, root)
    components: Components = build_components(
        Settings(model_repository=models, data_dir=root / "data", admin_key=ADMIN)
    )
    await components.open()
    await components.start()
    assert components.state is not None
    store = components.state.identity
    now = datetime.now(UTC)
    await store.create_plan(Plan(name="basic"))
    keys = {"admin": ADMIN}
    for tenant, scopes in (("acme", ("models:read",)), ("globex", ("models:read",))):
        await store.create_tenant(
            Tenant(id=f"ten_{tenant}", name=tenant, plan="basic", created_at=now)
        )
        issued = issue_key()
        await store.create_key(
            ApiKeyRecord(
                id=f"key_{tenant}",
                tenant_id=f"ten_{tenant}",
                name=tenant,
                prefix=issued.prefix,
                key_hash=issued.key_hash,
                scopes=scopes,
                created_at=now,
            )
        )
        keys[tenant] = issued.secret
    issued = issue_key()
    await store.create_key(
        ApiKeyRecord(
            id="key_infer",
            tenant_id="ten_acme",
            name="infer-only",
            prefix=issued.prefix,
            key_hash=issued.key_hash,
            scopes=("infer",),
            created_at=now,
        )
    )
    keys["infer_only"] = issued.secret
    transport = httpx.ASGITransport(app=components.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, keys, models
    await components.close()


async def card(
    world: tuple[httpx.AsyncClient, dict[str, str], Path],
    model: str,
    version: str | None = None,
    as_who: str = "admin",
    status: int = 200,
) -> dict[str, Any]:
    client, keys, _ = world
    path = f"/admin/models/{model}/card"
    if version is not None:
        path = f"/admin/models/{model}/versions/{version}/card"
    response = await client.get(path, headers={"Authorization": f"Bearer {keys[as_who]}"})
    assert response.status_code == status, response.text
    found: dict[str, Any] = response.json()
    return found


@pytest.mark.parametrize(
    ("model", "version"),
    [("credit-risk", "1"), ("credit-risk", "2"), (MINILM, "1"), (MINILM, "2")],
)
async def test_each_demo_version_has_a_card_whose_hash_is_the_files(
    world: tuple[httpx.AsyncClient, dict[str, str], Path], model: str, version: str
) -> None:
    found = await card(world, model, version)
    artifact_path = world[2] / model / version / "model.onnx"
    assert found["model"] == model and found["version"] == int(version)
    assert found["artifact"]["sha256"] == sha256(artifact_path)
    assert found["artifact"]["bytes"] == artifact_path.stat().st_size
    assert found["artifact"]["matches_lineage"] is True
    assert found["lineage_status"] == "recorded"
    lineage = found["lineage"]
    assert lineage["origin"] == "demo-build"
    assert lineage["artifact"]["sha256"] == found["artifact"]["sha256"]
    assert lineage["builder"]["recipe"] == "test"
    assert found["card"]["license"] == "Apache-2.0"  # the manifest's card text
    assert found["inputs"] and found["outputs"] and found["batching"]


async def test_a_credit_risk_card_has_its_data_set_metrics_and_serving_sections(
    world: tuple[httpx.AsyncClient, dict[str, str], Path],
) -> None:
    first, second = await card(world, "credit-risk", "1"), await card(world, "credit-risk", "2")
    assert first["lineage"]["dataset"]["rows"] == 20_000
    assert first["lineage"]["dataset"]["sha256"] == second["lineage"]["dataset"]["sha256"]
    assert second["lineage"]["evaluation"]["metrics"]["auc"] == pytest.approx(
        second["card"]["validation_metrics"]["auc"], abs=1e-6
    )
    assert first["anomaly"] == {"action": "flag", "threshold": 0.5}
    assert first["feedback"]["enabled"] is True
    # version 2 is the manifest's default; both are preloaded
    assert (first["deployment"]["role"], second["deployment"]["role"]) == ("none", "default")
    assert first["state"] == second["state"] == "READY"
    assert await card(world, "credit-risk") == second  # no version: the default one


async def test_minilm_int8_names_its_parent_and_is_not_loaded(
    world: tuple[httpx.AsyncClient, dict[str, str], Path],
) -> None:
    found = await card(world, MINILM, "2")
    assert found["lineage"]["parent"] == {"version": 1, "relation": "int8 dynamic quantization"}
    assert found["state"] == "UNAVAILABLE"  # preload is off in this copy


async def test_a_version_without_a_record_has_an_unknown_lineage_and_a_hash(
    world: tuple[httpx.AsyncClient, dict[str, str], Path],
) -> None:
    found = await card(world, "acme-risk", "1")
    assert found["lineage"] is None
    assert found["lineage_status"] == "unknown (no lineage record)"
    assert found["artifact"]["sha256"] == sha256(world[2] / "acme-risk" / "1" / "model.onnx")
    assert found["artifact"]["matches_lineage"] is None


async def test_a_changed_artifact_and_a_broken_record_are_reported(
    world: tuple[httpx.AsyncClient, dict[str, str], Path],
) -> None:
    tampered = await card(world, "tampered-risk", "1")
    assert tampered["artifact"]["matches_lineage"] is False
    broken = await card(world, "broken-risk", "1")
    assert broken["lineage"] is None and "not JSON" in broken["lineage_status"]


async def test_a_tenant_reads_its_own_models_card_and_not_another_tenants(
    world: tuple[httpx.AsyncClient, dict[str, str], Path],
) -> None:
    await card(world, "acme-risk", "1", as_who="acme")
    refused = await card(world, "acme-risk", "1", as_who="globex", status=404)
    assert refused == {"error": "unknown model 'acme-risk'"}  # as if it did not exist
    await card(world, "acme-risk", as_who="globex", status=404)
    await card(world, "credit-risk", "2", as_who="globex")  # a model for every tenant
    await card(world, "credit-risk", "2", as_who="infer_only", status=403)


async def test_a_tenant_reads_no_figure_of_a_learned_version_s_data(
    world: tuple[httpx.AsyncClient, dict[str, str], Path],
) -> None:
    """A learned version's lineage holds every tenant's traffic in figures: a tenant reads
    its hashes, names and verdicts only; an operator reads it all."""
    operator = await card(world, "learned-risk", "1")
    assert operator["scope"] == "model"
    assert operator["lineage"]["fairness"] == LEARNED["fairness"]
    assert operator["lineage"]["dataset"]["rows"] == 731
    tenant = await card(world, "learned-risk", "1", as_who="acme")
    assert tenant["scope"] == "tenant"
    lineage = tenant["lineage"]
    assert lineage["fairness"] is None
    assert lineage["dataset"]["sha256"] == "d" * 64 and lineage["dataset"]["name"]
    for figure in ("rows", "labelled_rows_in_window", "tenants", "bytes", "window"):
        assert lineage["dataset"][figure] is None
    assert lineage["sanitization"]["columns_removed"] == {"x": {"age": "s"}}
    for figure in ("rows_read", "rows_kept", "rows_left_out", "redactions"):
        assert lineage["sanitization"][figure] is None
    assert lineage["evaluation"]["metrics"] == {"auc": None}
    assert lineage["evaluation"]["serving"] == {"auc": None}
    assert lineage["evaluation"]["gates"] == [{"gate": "auc_drop_max", "passed": True}]
    assert lineage["training"]["answer"] is None and lineage["training"]["trainer"]
    text = _untimed(json.dumps(tenant))
    for leaked in ("731", "977", "0.8123", "0.31", "11696", "class_counts"):
        assert leaked not in text


@pytest.mark.parametrize("version", ["3", "0", "x", "01"])
async def test_an_unknown_version_or_model_is_404(
    world: tuple[httpx.AsyncClient, dict[str, str], Path], version: str
) -> None:
    found = await card(world, "credit-risk", version, status=404)
    assert "has no version" in found["error"]
    await card(world, "no-such-model", version, status=404)


async def test_the_cli_renders_the_servers_cards(
    world: tuple[httpx.AsyncClient, dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    served = {
        "/admin/models/credit-risk/card": await card(world, "credit-risk"),
        "/admin/models/acme-risk/versions/1/card": await card(world, "acme-risk", "1"),
        "/admin/models/all-MiniLM-L6-v2/versions/2/card": await card(world, MINILM, "2"),
    }
    asked: list[str] = []

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        path = httpx.URL(url).path
        asked.append(path)
        return httpx.Response(200, json=served[path])

    monkeypatch.setattr(cli.httpx, "request", request)
    monkeypatch.setattr(cli.console, "width", 250)
    runner = CliRunner()

    result = runner.invoke(cli.app, ["models", "card", "credit-risk", "--api-key", "k"])
    assert result.exit_code == 0, result.output
    default = served["/admin/models/credit-risk/card"]
    assert "credit-risk version 2 (READY, default, 100% of traffic)" in result.output
    assert default["artifact"]["sha256"] in result.output
    assert "(matches lineage)" in result.output
    assert "demo-build" in result.output and "auc" in result.output
    assert default["lineage"]["dataset"]["sha256"] in result.output

    result = runner.invoke(
        cli.app, ["models", "card", "acme-risk", "--version", "1", "--api-key", "k"]
    )
    assert result.exit_code == 0, result.output
    assert "unknown (no lineage record)" in result.output
    assert served["/admin/models/acme-risk/versions/1/card"]["artifact"]["sha256"] in (
        result.output
    )

    result = runner.invoke(cli.app, ["models", "card", MINILM, "--version", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == served["/admin/models/all-MiniLM-L6-v2/versions/2/card"]
    assert asked == list(served)


async def test_the_cli_prints_a_tenant_s_card_with_its_figures_withheld(
    world: tuple[httpx.AsyncClient, dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    served = await card(world, "learned-risk", "1", as_who="acme")
    monkeypatch.setattr(cli.httpx, "request", lambda *a, **k: httpx.Response(200, json=served))
    monkeypatch.setattr(cli.console, "width", 250)
    result = CliRunner().invoke(cli.app, ["models", "card", "learned-risk", "--version", "1"])
    assert result.exit_code == 0, result.output
    assert "tenant view" in result.output and "withheld rows" in result.output
    assert "d" * 64 in result.output  # the data set's hash stays
    for leaked in ("731", "977", "0.8123", "redactions", "None"):
        assert leaked not in _untimed(result.output)


def _untimed(text: str) -> str:
    """``text`` without its timestamps, whose digits (``...:59.731329``) may hold a
    withheld figure's by chance."""
    return re.sub(r"(\d{4}-\d\d-\d\d)?T?\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?", "<time>", text)
