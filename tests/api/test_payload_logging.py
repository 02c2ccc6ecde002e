"""Payload logging through the real server on SQLite: off by default, kept only when the
model, the tenant and the request all consent, sealed at rest, exported and erased per
data subject with audit entries, and never across tenants."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.core.governance.ports import PayloadQuery, PayloadRecord
from modelgate.core.governance.redaction import pseudonym
from modelgate.settings import Settings
from modelgate.storage.sql.schema import payload_consents, payload_logs
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "p" * 24
PSEUDONYM_KEY = "pseudonym-key-" + "x" * 20
POLICY = "payload_logging: {enabled: true, purpose: quality review, retention_days: 30}\n"


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _repository(root: Path) -> Path:
    """echo-text twice: ``echo-logged`` allows payload logging, ``echo-plain`` does not."""
    for name, extra in (("echo-logged", POLICY), ("echo-plain", "")):
        shutil.copytree(FIXTURE_MODELS / "echo-text", root / name)
        with open(root / name / "model.yaml", "a") as manifest:
            manifest.write(extra)
    return root


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=_repository(tmp_path_factory.mktemp("models")),
            data_dir=tmp_path_factory.mktemp("payloads"),
            auth="required",
            admin_key=ADMIN,
            payload_keys={"k1": base64.b64encode(os.urandom(32)).decode()},
            payload_pseudonym_key=PSEUDONYM_KEY,
            payload_flush_seconds=60,  # the tests flush themselves
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
    """acme and globex, each with a key that infers and one that administers (keys:admin,
    audit:read)."""
    assert (await client.post("/admin/plans", json={"name": "std"}, headers=_as(ADMIN))).is_success
    out: dict[str, Any] = {}
    for name in ("acme", "globex"):
        tenant = await client.post(
            "/admin/tenants", json={"name": name, "plan": "std"}, headers=_as(ADMIN)
        )
        tid = tenant.json()["id"]
        keys = {}
        for key_name, scopes in (("runner", ["infer"]), ("admin", ["keys:admin", "audit:read"])):
            made = await client.post(
                f"/admin/tenants/{tid}/keys",
                json={"name": key_name, "scopes": scopes},
                headers=_as(ADMIN),
            )
            assert made.status_code == 201, made.text
            keys[key_name] = made.json()["secret"]
        out[name] = {"id": tid, **keys}
    return out


async def infer(
    client: httpx.AsyncClient,
    key: str,
    text: str,
    parameters: dict[str, Any] | None = None,
    model: str = "echo-logged",
) -> None:
    body: dict[str, Any] = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]
    }
    if parameters is not None:
        body["parameters"] = parameters
    response = await client.post(f"/v2/models/{model}/infer", json=body, headers=_as(key))
    assert response.status_code == 200, response.text


async def stored(app: Components, subject: str | None = None) -> list[PayloadRecord]:
    assert app.payloads is not None and app.state is not None
    await app.payloads.flush()
    subjects = None if subject is None else (pseudonym(PSEUDONYM_KEY.encode(), subject),)
    return await app.state.payloads.find(PayloadQuery(subjects=subjects))


async def opt_in(client: httpx.AsyncClient, tenants: dict[str, Any], name: str) -> None:
    tid = tenants[name]["id"]
    response = await client.put(
        f"/admin/tenants/{tid}/payload-logging",
        json={"enabled": True},
        headers=_as(tenants[name]["admin"]),
    )
    assert response.status_code == 200, response.text


async def test_nothing_is_kept_by_default(
    client: httpx.AsyncClient, tenants: dict[str, Any], app: Components
) -> None:
    acme = tenants["acme"]
    await infer(client, acme["runner"], "hello", {"subject": "off-1"})
    await infer(client, acme["runner"], "hello", {"subject": "off-1", "consent": True})
    await infer(client, acme["runner"], "hello", {"subject": "off-1"}, model="echo-plain")
    assert await stored(app) == []
    setting = await client.get(
        f"/admin/tenants/{acme['id']}/payload-logging", headers=_as(acme["admin"])
    )
    assert setting.status_code == 200
    assert setting.json() == {
        "tenant_id": acme["id"],
        "enabled": False,
        "purpose": None,
        "retention_days": None,
        "updated_at": None,
    }


async def test_the_setting_is_the_tenants_own_and_audited(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    path = f"/admin/tenants/{globex['id']}/payload-logging"
    # another tenant's id answers exactly like a missing one
    taken = await client.put(path, json={"enabled": True}, headers=_as(acme["admin"]))
    missing = await client.put(
        "/admin/tenants/ten_nobody/payload-logging",
        json={"enabled": True},
        headers=_as(acme["admin"]),
    )
    assert taken.status_code == missing.status_code == 404
    assert taken.json() == {"error": f"unknown tenant '{globex['id']}'"}
    assert (await client.get(path, headers=_as(acme["admin"]))).status_code == 404
    # scopes, credentials and body validation
    mine = f"/admin/tenants/{acme['id']}/payload-logging"
    assert (await client.put(mine, json={"enabled": True})).status_code == 401
    denied = await client.put(mine, json={"enabled": True}, headers=_as(acme["runner"]))
    assert denied.status_code == 403
    for body in ({"enabled": True, "tenant_id": "x"}, {"enabled": True, "retention_days": 0}, {}):
        bad = await client.put(mine, json=body, headers=_as(acme["admin"]))
        assert bad.status_code == 422, body
    await opt_in(client, tenants, "acme")
    trail = await client.get("/admin/audit?limit=1000", headers=_as(ADMIN))
    [entry] = [e for e in trail.json() if e["action"] == "payload_logging.set"]
    assert entry["target"] == f"tenant:{acme['id']}" and entry["tenant_id"] == acme["id"]
    assert entry["after"]["enabled"] is True


async def test_kept_only_with_model_tenant_and_request_consent(
    client: httpx.AsyncClient, tenants: dict[str, Any], app: Components
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    await infer(client, acme["runner"], "hi", {"subject": "s-2"}, model="echo-plain")
    await infer(client, globex["runner"], "hi", {"subject": "s-2"})  # globex did not opt in
    assert await stored(app, "s-2") == []
    await infer(client, acme["runner"], "hi", {"subject": "s-2"})
    [record] = await stored(app, "s-2")
    assert record.tenant_id == acme["id"] and record.model == "echo-logged"
    assert record.purpose == "quality review"
    assert record.expires_at - record.created_at == timedelta(days=30)
    assert record.subject == pseudonym(PSEUDONYM_KEY.encode(), "s-2")


@pytest.mark.parametrize(
    "parameters",
    [{"consent": False}, {"log_payload": False}, {"consent": "no"}, {"consent": "false"}],
)
async def test_a_request_can_withhold_consent(
    client: httpx.AsyncClient, tenants: dict[str, Any], app: Components, parameters: Any
) -> None:
    await infer(client, tenants["acme"]["runner"], "hi", {"subject": "s-3", **parameters})
    assert await stored(app, "s-3") == []


async def test_a_stored_row_is_redacted_and_sealed(
    client: httpx.AsyncClient, tenants: dict[str, Any], app: Components
) -> None:
    text = "card 4111 1111 1111 1111, mail bob@example.com, marker-XYZZY"
    await infer(client, tenants["acme"]["runner"], text, {"subject": "carol@example.com"})
    [record] = await stored(app, "carol@example.com")
    assert record.redactions == {"card": 2, "email": 2}  # in the input and its echo
    assert app.state is not None
    async with app.state.engine.connect() as connection:
        raw = (
            (await connection.execute(select(payload_logs).where(payload_logs.c.id == record.id)))
            .one()
            ._mapping
        )
    everything = b"".join(
        v if isinstance(v, bytes) else str(v).encode() for v in dict(raw).values()
    )
    for secret in (b"marker-XYZZY", b"MARKER-XYZZY", b"4111", b"bob@", b"carol", b"[CARD]"):
        assert secret not in everything


async def test_export_and_erasure_of_a_subject_are_audited(
    client: httpx.AsyncClient, tenants: dict[str, Any], app: Components
) -> None:
    acme = tenants["acme"]
    for text in ("first", "second call +1 555 123 4567"):
        await infer(client, acme["runner"], text, {"subject": "dave"})
    exported = await client.get("/admin/subjects/dave/export", headers=_as(acme["admin"]))
    assert exported.status_code == 200, exported.text
    body = exported.json()
    assert body["subject"] == "dave"
    logs = body["payload_logs"]
    assert [r["inputs"][0]["data"] for r in logs] == [["first"], ["second call [PHONE]"]]
    assert logs[1]["outputs"][0]["data"] == ["SECOND CALL [PHONE]"]
    assert logs[1]["redactions"] == {"phone": 2}

    erased = await client.delete("/admin/subjects/dave", headers=_as(acme["admin"]))
    assert erased.status_code == 200
    assert erased.json() == {"erased": {"payload_logs": 2, "predictions": 0}}
    assert await stored(app, "dave") == []
    again = await client.get("/admin/subjects/dave/export", headers=_as(acme["admin"]))
    assert again.json()["payload_logs"] == []

    trail = (await client.get("/admin/audit?limit=1000", headers=_as(ADMIN))).json()
    target = f"subject:{pseudonym(PSEUDONYM_KEY.encode(), 'dave')}"
    actions = [(e["action"], e["tenant_id"]) for e in trail if e["target"] == target]
    assert actions == [
        ("subject.export", acme["id"]),
        ("subject.erase", acme["id"]),
        ("subject.export", acme["id"]),
    ]
    assert "dave" not in json.dumps(trail)
    # the tenant reads its own trail, erasures included; the other tenant does not
    own = await client.get("/admin/audit?limit=1000", headers=_as(acme["admin"]))
    assert [e["action"] for e in own.json() if e["target"] == target] == [
        "subject.export",
        "subject.erase",
        "subject.export",
    ]
    other = await client.get("/admin/audit?limit=1000", headers=_as(tenants["globex"]["admin"]))
    assert all(e["target"] != target for e in other.json())


async def test_another_tenant_cannot_export_or_erase(
    client: httpx.AsyncClient, tenants: dict[str, Any], app: Components
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    await infer(client, acme["runner"], "mine", {"subject": "erin"})
    as_globex = _as(globex["admin"])
    seen = await client.get("/admin/subjects/erin/export", headers=as_globex)
    assert seen.status_code == 200 and seen.json()["payload_logs"] == []
    erased = await client.delete("/admin/subjects/erin", headers=as_globex)
    assert erased.json() == {"erased": {"payload_logs": 0, "predictions": 0}}
    for method, path in (
        ("GET", f"/admin/subjects/erin/export?tenant={acme['id']}"),
        ("DELETE", f"/admin/subjects/erin?tenant={acme['id']}"),
    ):
        foreign = await client.request(method, path, headers=as_globex)
        assert foreign.status_code == 404
        assert foreign.json() == {"error": f"unknown tenant '{acme['id']}'"}
        denied = await client.request(method, path, headers=_as(acme["runner"]))
        assert denied.status_code == 403
        assert (await client.request(method, path)).status_code == 401
    assert len(await stored(app, "erin")) == 1
    # operators reach every tenant
    everywhere = await client.get("/admin/subjects/erin/export", headers=_as(ADMIN))
    assert [r["tenant_id"] for r in everywhere.json()["payload_logs"]] == [acme["id"]]
    assert (await client.delete("/admin/subjects/erin", headers=_as(ADMIN))).json() == {
        "erased": {"payload_logs": 1, "predictions": 0}
    }


async def test_withdrawn_consent_stops_logging_at_once(
    client: httpx.AsyncClient, tenants: dict[str, Any], app: Components
) -> None:
    acme = tenants["acme"]
    response = await client.put(
        f"/admin/tenants/{acme['id']}/payload-logging",
        json={"enabled": False},
        headers=_as(acme["admin"]),
    )
    assert response.status_code == 200 and response.json()["enabled"] is False
    await infer(client, acme["runner"], "after", {"subject": "frank"})
    assert await stored(app, "frank") == []
    assert app.state is not None
    async with app.state.engine.connect() as connection:
        setting = (await connection.execute(select(payload_consents))).one()
    assert setting.enabled is False


@pytest.mark.parametrize(
    ("subject", "status"),
    [
        ("'; DROP TABLE payload_logs; --", 200),
        ("%00", 200),
        ("%F0%9F%98%80", 200),
        ("a%20b", 200),
        ("x" * 300, 400),
    ],
)
async def test_no_subject_id_gets_a_server_error(
    client: httpx.AsyncClient, tenants: dict[str, Any], subject: str, status: int
) -> None:
    headers = _as(tenants["acme"]["admin"])
    for method, path in (
        ("GET", f"/admin/subjects/{subject}/export"),
        ("DELETE", f"/admin/subjects/{subject}"),
    ):
        response = await client.request(method, path, headers=headers)
        assert response.status_code == status, (path, response.text)
        if status == 400:
            assert response.json() == {"error": "a subject id is 1 to 256 characters"}


async def test_a_jobs_requests_and_results_are_sealed_with_the_payload_keys(
    client: httpx.AsyncClient, tenants: dict[str, Any], app: Components
) -> None:
    """Jobs are not payload logging (they are stored to be run), but they are inference
    inputs and outputs all the same: with payload keys they are sealed at rest."""
    from modelgate.storage.sql.schema import job_items

    item = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                        "data": ["marker-JOBJOB"]}]}  # fmt: skip
    key = _as(tenants["acme"]["runner"])
    submitted = await client.post(
        "/v1/jobs", json={"model": "echo-plain", "request": item}, headers=key
    )
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["id"]
    assert app.jobs is not None
    while await app.jobs.worker.run_once():
        pass
    for _ in range(400):  # the in-process worker may hold it (a loaded CI machine)
        job = (await client.get(f"/v1/jobs/{job_id}", headers=key)).json()
        if job["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "succeeded", job
    results = (await client.get(f"/v1/jobs/{job_id}/results", headers=key)).json()["data"]
    assert results[0]["response"]["outputs"][0]["data"] == ["MARKER-JOBJOB"]  # echo-text
    assert app.state is not None
    async with app.state.engine.connect() as connection:
        rows = await connection.execute(select(job_items).where(job_items.c.job_id == job_id))
        stored = json.dumps([dict(r._mapping) for r in rows], default=str)
    assert "$sealed" in stored
    for plain in ("marker-JOBJOB", "MARKER-JOBJOB", "inputs", "outputs"):
        assert plain not in stored, plain
