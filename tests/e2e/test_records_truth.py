"""What a real server keeps is what docs/privacy.md says, checked as an auditor would: after
requests that withhold consent and after a subject's erasure (with an Idempotency-Key),
a dump of every table (SQLite and PostgreSQL) and the server's log hold the subject's raw id
in no form (plain, hex, base64); the export of a subject who withheld consent holds
nothing. Feedback sent right after its answer is always accepted; feedback for an id that
never existed is 404, after a bounded wait. A job naming a data subject is refused."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from sqlalchemy.engine import make_url

from modelgate.core.governance.redaction import pseudonym
from tests.contract.conftest import drop_postgres_database, new_postgres_database
from tests.e2e.conftest import (
    AUTH,
    RunningServer,
    server_errors,
    start_server,
    stop_server,
)

PSEUDONYM_KEY = "pseudonym-key-" + "e" * 20
APPLICANT = [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1]


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _repository(demo_models: Path, root: Path) -> Path:
    """credit-risk as built: feedback on, and it allows payload logging."""
    shutil.copytree(demo_models / "credit-risk", root / "credit-risk")
    return root


def _server(demo_models: Path, workdir: Path, database: str | None, **env: str) -> RunningServer:
    settings = {
        "MODELGATE_PAYLOAD_KEYS": json.dumps({"k1": base64.b64encode(os.urandom(32)).decode()}),
        "MODELGATE_PAYLOAD_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "MODELGATE_LOG_FORMAT": "json",
        "MODELGATE_ABUSE_SLOW_AFTER": "1000000",
        "MODELGATE_ABUSE_BLOCK_AFTER": "1000000",
        **env,
    }
    if database is not None:
        settings["MODELGATE_DATABASE_URL"] = database
    return start_server(_repository(demo_models, workdir / "models"), workdir, env=settings)


def _tenant(client: httpx.Client) -> dict[str, str]:
    """A tenant that consents to payload logging, with a key that infers and one that
    administers it (keys:admin)."""
    plan = client.post("/admin/plans", json={"name": "std"}, headers=AUTH)
    assert plan.status_code in (200, 201, 409), plan.text
    made = client.post("/admin/tenants", json={"name": "acme", "plan": "std"}, headers=AUTH)
    assert made.is_success, made.text
    tenant = made.json()["id"]
    keys = {"id": tenant}
    for name, scopes in (("runner", ["infer", "models:read"]), ("admin", ["keys:admin"])):
        key = client.post(
            f"/admin/tenants/{tenant}/keys", json={"name": name, "scopes": scopes}, headers=AUTH
        )
        assert key.is_success, key.text
        keys[name] = key.json()["secret"]
    consent = client.put(
        f"/admin/tenants/{tenant}/payload-logging",
        json={"enabled": True},
        headers=_as(keys["admin"]),
    )
    assert consent.status_code == 200, consent.text
    return keys


def _infer(client: httpx.Client, key: str, request_id: str, **parameters: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 12], "data": APPLICANT}]
    }
    if parameters:
        body["parameters"] = parameters
    response = client.post(
        "/v2/models/credit-risk/infer",
        json=body,
        headers={**_as(key), "X-Request-Id": request_id},
    )
    assert response.status_code == 200, response.text
    return response


# -- an auditor's search ---------------------------------------------------------------------


def forms(subject: str) -> list[bytes]:
    """The raw id as it could sit in a column: plain, hex (either case), base64 (each of
    the three alignments inside a longer value, the stable middle part of each)."""
    raw = subject.encode()
    found = [raw, raw.hex().encode(), raw.hex().upper().encode()]
    for shift in range(3):
        encoded = base64.b64encode(b"\x00" * shift + raw)
        found.append(encoded[4 if shift else 0 : -4])  # drop the chars the neighbours change
    return found


def holds(value: bytes, subject: str) -> bool:
    return any(form and form in value for form in forms(subject))


def sqlite_dump(data_dir: Path) -> dict[str, list[bytes]]:
    """Every value of every table of every SQLite file under ``data_dir``, as bytes."""
    tables: dict[str, list[bytes]] = {}
    files = [
        p
        for p in data_dir.rglob("*")
        if p.is_file() and p.read_bytes()[:16] == b"SQLite format 3\x00"
    ]
    assert files, f"no SQLite database under {data_dir}"
    for path in files:
        connection = sqlite3.connect(path)
        try:
            names = [
                r[0]
                for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for name in names:
                values = tables.setdefault(f"{path.name}:{name}", [])
                for row in connection.execute(f'SELECT * FROM "{name}"'):
                    for value in row:
                        if isinstance(value, bytes):
                            values.append(value)
                        elif value is not None:
                            values.append(str(value).encode())
        finally:
            connection.close()
    return tables


async def postgres_dump(url: str) -> dict[str, list[bytes]]:
    """Every row of every table of the database, as PostgreSQL writes it as text (bytea in
    hex, so the hex form finds raw bytes)."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        names = [
            r["table_name"]
            for r in await connection.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
                "AND table_type = 'BASE TABLE'"
            )
        ]
        tables = {}
        for name in names:
            rows = await connection.fetch(f'SELECT t::text AS row FROM "{name}" t')
            tables[name] = [r["row"].encode() for r in rows]
        return tables
    finally:
        await connection.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    url = new_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


def test_withheld_consent_and_erasure_leave_no_raw_subject_id(
    database: str | None, demo_models: Path, tmp_path: Path
) -> None:
    server = _server(demo_models, tmp_path, database)
    withheld = "alice-" + secrets.token_hex(6)  # never consents
    erased = "bob-" + secrets.token_hex(6)  # consents, then is erased
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            keys = _tenant(client)
            for n in range(5):
                _infer(client, keys["runner"], f"withheld-{n}", subject=withheld, consent=False)
            _infer(client, keys["runner"], "withheld-bare", consent=False)
            grpc = grpcclient.InferenceServerClient(server.grpc_address)
            try:  # gRPC: the same parameters, as a bool_param and a string_param
                tensor = grpcclient.InferInput("features", [1, 12], "FP32")
                tensor.set_data_from_numpy(np.array([APPLICANT], dtype=np.float32))
                for n in range(2):
                    grpc.infer(
                        "credit-risk",
                        [tensor],
                        request_id=f"withheld-grpc-{n}",
                        parameters={"subject": withheld, "consent": False},
                        headers={"authorization": f"Bearer {keys['runner']}"},
                    )
            finally:
                grpc.close()
            for n in range(3):
                _infer(client, keys["runner"], f"consented-{n}", subject=erased)
            # feedback for a consented request is joined; for a withheld one nothing is there
            ok = client.post(
                "/v1/feedback",
                json={"request_id": "consented-0", "label": 1},
                headers=_as(keys["runner"]),
            )
            assert ok.status_code == 200, ok.text
            gone = client.post(
                "/v1/feedback",
                json={"request_id": "withheld-0", "label": 1},
                headers=_as(keys["runner"]),
            )
            assert gone.status_code == 404, gone.text

            export = client.get(f"/admin/subjects/{withheld}/export", headers=_as(keys["admin"]))
            assert export.status_code == 200, export.text
            assert export.json()["predictions"] == []
            assert export.json()["payload_logs"] == []

            before = client.get(f"/admin/subjects/{erased}/export", headers=_as(keys["admin"]))
            assert len(before.json()["predictions"]) == 3  # kept with consent, as a pseudonym
            idempotent = {**_as(keys["admin"]), "Idempotency-Key": "erase-" + secrets.token_hex(4)}
            erase = client.delete(f"/admin/subjects/{erased}", headers=idempotent)
            assert erase.status_code == 200, erase.text
            assert erase.json()["erased"]["predictions"] == 3
            again = client.delete(f"/admin/subjects/{erased}", headers=idempotent)
            assert again.headers.get("idempotent-replayed") == "true"  # the key still works
            assert again.json() == erase.json()
    finally:
        code = stop_server(server)  # every log line and row written
    assert code == 0, server_errors(server)

    if database is None:
        tables = sqlite_dump(tmp_path / "data")
    else:
        tables = asyncio.run(postgres_dump(database))
    assert any(name.endswith("predictions") for name in tables), sorted(tables)
    for subject in (withheld, erased):
        found = {name for name, values in tables.items() if any(holds(v, subject) for v in values)}
        assert not found, f"the raw id {subject!r} is still stored in {sorted(found)}"
    # nothing identifying of the withheld requests: no row names their pseudonym or ids
    hidden = pseudonym(PSEUDONYM_KEY.encode(), withheld).encode()
    for name, values in tables.items():
        if not name.endswith("audit_log"):  # the export of the subject is audited, by pseudonym
            assert not any(hidden in v for v in values), f"{name} holds the withheld pseudonym"
        assert not any(b"withheld-" in v for v in values), f"{name} holds a withheld request"
    log = server.log.read_bytes()
    assert b'"path"' in log  # the request log was on
    for subject in (withheld, erased):
        assert not holds(log, subject), f"the server log holds {subject!r}"


def test_feedback_sent_right_after_each_answer_is_always_accepted(
    demo_models: Path, tmp_path: Path
) -> None:
    server = _server(demo_models, tmp_path, None)
    refused: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as admin:
            keys = _tenant(admin)

        async def one_client(worker: int) -> None:
            limits = httpx.Limits(max_connections=1)
            async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as c:
                for n in range(125):
                    request_id = f"w{worker}-{n}"
                    body = {
                        "inputs": [
                            {
                                "name": "features",
                                "datatype": "FP32",
                                "shape": [1, 12],
                                "data": APPLICANT,
                            }
                        ]
                    }
                    answer = await c.post(
                        "/v2/models/credit-risk/infer",
                        json=body,
                        headers={**_as(keys["runner"]), "X-Request-Id": request_id},
                    )
                    assert answer.status_code == 200, answer.text
                    sent = await c.post(
                        "/v1/feedback",
                        json={"request_id": request_id, "label": n % 2},
                        headers=_as(keys["runner"]),
                    )
                    if sent.status_code != 200:
                        refused.append(f"{request_id}: {sent.status_code} {sent.text}")

        async def all_clients() -> None:
            await asyncio.gather(*(one_client(w) for w in range(8)))  # 1,000 in all

        asyncio.run(all_clients())
        assert refused == [], f"{len(refused)} of 1000 refused: {refused[:5]}"

        with httpx.Client(base_url=server.url, timeout=30) as client:
            started = time.monotonic()
            unknown = client.post(
                "/v1/feedback",
                json={"request_id": "never-" + secrets.token_hex(8), "label": 1},
                headers=_as(keys["runner"]),
            )
            waited = time.monotonic() - started
            assert unknown.status_code == 404, unknown.text
            assert waited < 30  # bounded (2 s by default), however loaded the machine

            # a job may not name a data subject: erasure could not reach it
            job = client.post(
                "/v1/jobs",
                json={
                    "model": "credit-risk",
                    "request": {
                        "inputs": [
                            {
                                "name": "features",
                                "datatype": "FP32",
                                "shape": [1, 12],
                                "data": APPLICANT,
                            }
                        ],
                        "parameters": {"subject": "carol-1"},
                    },
                },
                headers=_as(keys["runner"]),
            )
            assert job.status_code == 400, job.text
            assert "data subject" in job.text
    finally:
        code = stop_server(server)
    assert code == 0, server_errors(server)
