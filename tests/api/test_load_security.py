"""What runs is the operator's decision (issue 16, finding 1), over REST and gRPC.

A tenant key with ``models:write`` loads and unloads what the repository holds and can change
none of it: a configuration override is 403 for it (``models:configure`` is an operator
scope) and 400 naming the field for an operator when the field is not run-time tuning.
Every load, unload and refusal lands in the audit trail. Files resolve inside the model's
folder; errors name no host path. ``modelgate_model_loaded`` follows what answers
(issue 17, finding 3) and a failed load leaves a warning (finding 4).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc
from typer.testing import CliRunner

from modelgate.cli import app
from modelgate.core.access.audit import AuditRecord
from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "L" * 24
MODEL = "credit-risk"
OWN = "acme-credit-risk"
ROW = [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1]


@dataclass
class World:
    server: Server
    keys: dict[str, str]
    root: Path
    marker: Path
    evil: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    async def audit(self, model: str = MODEL) -> list[AuditRecord]:
        assert self.server.components is not None and self.server.components.state is not None
        return list(
            await self.server.components.state.audit.list(limit=1000, target=f"model:{model}")
        )


def _layout(demo: Path, root: Path) -> tuple[Path, Path]:
    """A repository with a copy of credit-risk and two models whose files escape their
    folder; a Python file outside it that leaves a marker when imported."""
    repository = root / "models"
    repository.mkdir()
    shutil.copytree(demo / MODEL, repository / MODEL)
    # a copy private to acme: the one model acme's key may load and unload
    shutil.copytree(demo / MODEL, repository / OWN)
    own = yaml.safe_load((repository / OWN / "model.yaml").read_text())
    (repository / OWN / "model.yaml").write_text(yaml.safe_dump({**own, "tenants": ["ten_acme"]}))
    marker = root / "imported.txt"
    evil = root / "evil.py"
    evil.write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from modelgate.model import PythonModel\n"
        "class X(PythonModel):\n"
        "    def predict(self, inputs):\n"
        "        return {}\n"
    )
    manifest = yaml.safe_load((demo / MODEL / "model.yaml").read_text())
    for key in ("anomaly", "feedback", "card", "learning"):  # learning needs feedback
        manifest.pop(key, None)
    manifest["preload"] = False
    # a working model file outside the repository, linked from inside a version folder
    shutil.copy(demo / MODEL / "1" / "model.onnx", root / "outside.onnx")
    (repository / "escape" / "1").mkdir(parents=True)
    (repository / "escape" / "model.yaml").write_text(yaml.safe_dump(manifest))
    os.symlink(root / "outside.onnx", repository / "escape" / "1" / "model.onnx")
    # a manifest on disk that names a file above its folder
    (repository / "dotdot" / "1").mkdir(parents=True)
    (repository / "dotdot" / "model.yaml").write_text(
        yaml.safe_dump({**manifest, "artifact": "../../../outside.onnx"})
    )
    return repository, marker


async def _key(keys: dict[str, str], store: Any, name: str, tenant: str, *scopes: str) -> None:
    issued = issue_key()
    await store.create_key(
        ApiKeyRecord(
            id=f"key_{name}",
            tenant_id=tenant,
            name=name,
            prefix=issued.prefix,
            key_hash=issued.key_hash,
            scopes=scopes,
            created_at=datetime.now(UTC),
        )
    )
    keys[name] = issued.secret


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("load-security")
    repository, marker = _layout(demo_models, root)
    async with running_server(
        root / "data",
        model_repository=repository,
        auth="required",
        admin_key=ADMIN,
        key_cache_seconds=0,
    ) as server:
        assert server.components is not None and server.components.state is not None
        store = server.components.state.identity
        await store.create_plan(Plan(name="basic"))
        for tenant in ("acme", "globex"):
            await store.create_tenant(
                Tenant(id=f"ten_{tenant}", name=tenant, plan="basic", created_at=datetime.now(UTC))
            )
        keys = {"admin": ADMIN}
        await _key(keys, store, "acme", "ten_acme", "infer", "models:read", "models:write")
        # a tenant's key that somehow holds the operator scope still may not override
        await _key(keys, store, "sneaky", "ten_acme", "infer", "models:write", "models:configure")
        await _key(keys, store, "globex", "ten_globex", "infer", "models:read")
        # the tests below load and unload acme's model back to back (paced: test_pacing)
        server.components.service.catalog.control.tenant_change_interval_s = 0
        yield World(server, keys, root, marker, root / "evil.py")


async def load(
    world: World, protocol: str, who: str, model: str, config: dict[str, Any] | None = None
) -> tuple[int, str]:
    """Load ``model`` as ``who``: (REST status or its gRPC equivalent, error message)."""
    if protocol == "rest":
        body = {"parameters": {"config": config}} if config is not None else {}
        async with httpx.AsyncClient(base_url=world.url, timeout=60) as http:
            response = await http.post(
                f"/v2/repository/models/{model}/load",
                json=body,
                headers={"Authorization": f"Bearer {world.keys[who]}"},
            )
        return response.status_code, response.json().get("error", "")
    request = service_pb2.RepositoryModelLoadRequest(model_name=model)
    if config is not None:
        request.parameters["config"].string_param = json.dumps(config)
    codes = {
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    }
    address = f"127.0.0.1:{world.server.grpc_port}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            await stub.RepositoryModelLoad(
                request, metadata=(("authorization", f"Bearer {world.keys[who]}"),)
            )
        except grpc.aio.AioRpcError as exc:
            return codes.get(exc.code(), 500), exc.details() or ""
    return 200, ""


async def call(world: World, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.url, timeout=60) as http:
        return await http.request(
            method, path, headers={"Authorization": f"Bearer {world.keys[who]}"}, **kwargs
        )


async def infer(world: World, who: str, version: str | None = None) -> httpx.Response:
    path = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 12], "data": ROW}]}
    return await call(world, who, "POST", path, json=body)


def answer(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


MALICIOUS = {
    "python": lambda world: {
        "runtime": "python",
        "artifact": str(world.evil),
        "runtime_options": {"class": "X"},
    },
    "tenants": lambda world: {"tenants": ["ten_acme"]},
    "rate_limit": lambda world: {"rate_limit": {"requests_per_second": 0.001}},
    "dotdot": lambda world: {"artifact": "../../../../etc/hostname"},
    "absolute": lambda world: {"artifact": "/etc/hostname"},
}
#: the field an operator's refusal names
REFUSED_FIELD = {
    "python": "artifact",
    "tenants": "tenants",
    "rate_limit": "rate_limit",
    "dotdot": "artifact",
    "absolute": "artifact",
}


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("attack", sorted(MALICIOUS))
@pytest.mark.parametrize("who", ["acme", "sneaky", "admin"])
async def test_no_load_changes_what_runs_or_who_sees_it(
    world: World, protocol: str, attack: str, who: str
) -> None:
    before = answer(await infer(world, "globex"))
    config = MALICIOUS[attack](world)
    audited = len(await world.audit())

    status, message = await load(world, protocol, who, MODEL, config)

    if who == "admin":  # an operator may override, but not these fields
        assert status == 400, message
        assert f"'{REFUSED_FIELD[attack]}'" in message
    else:
        assert status == 403, message
        assert "models:configure" in message
    assert str(world.root) not in message
    # nothing changed: the other tenant gets the same answer, nothing was imported
    assert answer(await infer(world, "globex")) == before
    assert (await call(world, "globex", "GET", f"/v2/models/{MODEL}/ready")).status_code == 200
    assert not world.marker.exists()
    refused = (await world.audit())[audited:]
    assert [r.action for r in refused] == ["model.load.refused"]
    assert refused[0].after is not None
    assert REFUSED_FIELD[attack] in refused[0].after["fields"]
    assert refused[0].actor == ("admin:bootstrap-admin" if who == "admin" else f"key:key_{who}")


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
async def test_a_tenant_loads_and_unloads_its_own_model_as_the_manifest_says_and_is_audited(
    world: World, protocol: str
) -> None:
    audited = len(await world.audit(OWN))
    response = await call(world, "acme", "POST", f"/v2/repository/models/{OWN}/unload")
    assert response.status_code == 200, response.text
    assert (await call(world, "acme", "GET", f"/v2/models/{OWN}/ready")).status_code == 503

    assert await load(world, protocol, "acme", OWN) == (200, "")
    assert (await call(world, "acme", "GET", f"/v2/models/{OWN}/ready")).status_code == 200

    records = (await world.audit(OWN))[audited:]
    assert [r.action for r in records] == ["model.unload", "model.load"]
    assert all(r.actor == "key:key_acme" and r.tenant_id == "ten_acme" for r in records)
    assert records[0].before == {"versions": [1, 2]}
    assert records[1].after == {"fields": [], "override": None, "versions": [1, 2]}


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
async def test_a_tenant_neither_loads_nor_unloads_a_shared_model(
    world: World, protocol: str
) -> None:
    """Each would make every other tenant wait for the model's load and warm-up, as often
    as the tenant liked: loading and unloading a shared model is the operator's."""
    audited = len(await world.audit())
    unloaded = await call(world, "acme", "POST", f"/v2/repository/models/{MODEL}/unload")
    status, message = await load(world, protocol, "acme", MODEL)

    assert unloaded.status_code == 403 and "shared" in unloaded.json()["error"]
    assert status == 403 and "shared" in message
    assert (await call(world, "globex", "GET", f"/v2/models/{MODEL}/ready")).status_code == 200
    answer(await infer(world, "globex"))
    records = (await world.audit())[audited:]
    assert [r.action for r in records] == ["model.unload.refused", "model.load.refused"]
    assert all(r.actor == "key:key_acme" for r in records)
    # an operator still may
    assert await load(world, protocol, "admin", MODEL) == (200, "")


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
async def test_an_operator_overrides_run_time_settings_and_is_audited(
    world: World, protocol: str
) -> None:
    audited = len(await world.audit())
    override = {"batching": {"max_batch_size": 16}, "instances": 2}
    assert await load(world, protocol, "admin", MODEL, override) == (200, "")
    try:
        config = (await call(world, "admin", "GET", f"/v2/models/{MODEL}/config")).json()
        assert config["max_batch_size"] == 16
        answer(await infer(world, "globex"))
        status, message = await load(world, protocol, "admin", MODEL, {"card": {"x": 1}})
        assert status == 400 and "'card'" in message
    finally:
        assert await load(world, protocol, "admin", MODEL) == (200, "")
    config = (await call(world, "admin", "GET", f"/v2/models/{MODEL}/config")).json()
    assert config["max_batch_size"] == 64  # the manifest again

    records = (await world.audit())[audited:]
    assert [r.action for r in records] == ["model.load", "model.load.refused", "model.load"]
    assert records[0].actor == "admin:bootstrap-admin" and records[0].tenant_id is None
    assert records[0].after is not None
    assert records[0].after["fields"] == ["batching.max_batch_size", "instances"]
    assert records[0].after["override"] == override


@pytest.mark.parametrize("model", ["escape", "dotdot"])
async def test_files_outside_the_model_folder_are_refused_without_host_paths(
    world: World, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="modelgate.registry"):
        status, message = await load(world, "rest", "admin", model)
    assert status == 400, message
    assert "outside the model's folder" in message or "relative path" in message
    assert str(world.root) not in message and "/tmp" not in message
    warnings = [r.getMessage() for r in caplog.records if r.name == "modelgate.registry"]
    assert any(model in w for w in warnings) and not any(str(world.root) in w for w in warnings)
    failed = (await world.audit(model))[-1]
    assert failed.action == "model.load.failed" and failed.after is not None
    assert failed.after["reason"] == message
    index = await call(world, "admin", "POST", "/v2/repository/index")
    # (a manifest that does not validate is listed to nobody)
    assert all(r["state"] == "UNAVAILABLE" for r in index.json() if r["name"] == model)
    assert str(world.root) not in index.text
    response = await call(world, "admin", "POST", f"/v2/models/{model}/infer", json={})
    assert response.status_code in (400, 503)
    assert str(world.root) not in response.text


async def gauges(world: World) -> dict[str, float]:
    text = (await call(world, "admin", "GET", "/metrics")).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("modelgate_model_loaded{") and f'model="{MODEL}"' in line:
            version = line.split('version="')[1].split('"')[0]
            found[version] = float(line.rsplit(" ", 1)[1])
    return found


async def serving(world: World) -> dict[str, float]:
    """1.0 for each version that answers /ready and inference now, else 0.0."""
    out: dict[str, float] = {}
    for version in ("1", "2"):
        ready = await call(world, "admin", "GET", f"/v2/models/{MODEL}/versions/{version}/ready")
        answers = (await infer(world, "admin", version)).status_code == 200
        assert (ready.status_code == 200) == answers
        out[version] = 1.0 if answers else 0.0
    return out


async def test_model_loaded_follows_what_answers(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    assert await load(world, "rest", "admin", MODEL) == (200, "")
    assert await gauges(world) == await serving(world) == {"1": 1.0, "2": 1.0}
    assert await load(world, "grpc", "admin", MODEL) == (200, "")  # a reload
    assert await gauges(world) == await serving(world) == {"1": 1.0, "2": 1.0}

    artifact = world.root / "models" / MODEL / "2" / "model.onnx"
    good = artifact.read_bytes()
    artifact.write_bytes(b"not an onnx graph")
    try:
        with caplog.at_level(logging.WARNING, logger="modelgate.registry"):
            status, message = await load(world, "rest", "admin", MODEL)
    finally:
        artifact.write_bytes(good)
    assert status == 400 and "version 2" in message and str(world.root) not in message
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "modelgate.registry"
    ]
    assert any(MODEL in w and "version 2" in w for w in warnings), warnings
    assert not any(str(world.root) in w for w in warnings)
    # the failed reload left the old copies serving, and the gauge says so
    assert await gauges(world) == await serving(world) == {"1": 1.0, "2": 1.0}

    response = await call(world, "admin", "POST", f"/v2/repository/models/{MODEL}/unload")
    assert response.status_code == 200
    assert await gauges(world) == await serving(world) == {"1": 0.0, "2": 0.0}
    assert await load(world, "rest", "admin", MODEL) == (200, "")
    assert await gauges(world) == await serving(world) == {"1": 1.0, "2": 1.0}


async def test_the_cli_loads_with_an_override_and_shows_a_refusal(world: World) -> None:
    def run(*args: str) -> Any:
        common = ["--url", world.url, "--api-key", ADMIN]
        return CliRunner().invoke(app, ["models", "load", MODEL, *common, *args])

    refused = await asyncio.to_thread(run, "--config", '{"tenants": ["ten_acme"]}')
    assert refused.exit_code == 1 and "'tenants'" in refused.output
    loaded = await asyncio.to_thread(run, "--config", '{"batching": {"max_batch_size": 8}}')
    assert loaded.exit_code == 0, loaded.output
    config = (await call(world, "admin", "GET", f"/v2/models/{MODEL}/config")).json()
    assert config["max_batch_size"] == 8
    assert (await asyncio.to_thread(run)).exit_code == 0
    assert (await asyncio.to_thread(run, "--config", "[1]")).exit_code == 2


async def test_a_tenant_loads_or_unloads_a_model_at_most_once_every_interval(
    world: World,
) -> None:
    """Each load builds and warms sessions on the CPU every tenant shares: a tenant's own
    model is paced (429 / RESOURCE_EXHAUSTED with Retry-After); operators are not."""
    assert world.server.components is not None
    control = world.server.components.service.catalog.control
    control.tenant_change_interval_s = 30.0
    try:
        assert await load(world, "rest", "acme", OWN) == (200, "")
        status, message = await load(world, "rest", "acme", OWN)
        grpc_status, _ = await load(world, "grpc", "acme", OWN)
        unloaded = await call(world, "acme", "POST", f"/v2/repository/models/{OWN}/unload")
        assert await load(world, "rest", "admin", OWN) == (200, "")
    finally:
        control.tenant_change_interval_s = 0
    assert status == 429 and "once every 30 s" in message
    assert grpc_status == 429
    assert unloaded.status_code == 429 and 0 < int(unloaded.headers["retry-after"]) <= 30
    assert (await call(world, "acme", "GET", f"/v2/models/{OWN}/ready")).status_code == 200
