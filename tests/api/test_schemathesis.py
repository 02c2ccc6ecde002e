"""Schemathesis against ``/openapi.json``, the whole document (OIP v2, /v1, jobs, feedback,
OAuth, metrics, admin), with the operator's key and with a tenant's: no server error, no
answer that breaks its schema, no status and no content type the document does not list.

Few examples per operation (the admin API's own, deeper run is
tests/api/attacks/test_schemathesis.py): this run checks that the document and the server
agree everywhere. It runs the ``st`` command line against a real server, so what it tests
is what a client gets over HTTP; a failure prints each case with a ``curl`` line.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from modelgate.server import Server
from tests.api.openapi_server import ADMIN, openapi_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).parents[2]
ST = Path(sys.executable).parent / "st"
MAX_EXAMPLES = 3
SEED = 14
CHECKS = (
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with openapi_server(tmp_path_factory.mktemp("data")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def credentials(server: Server) -> dict[str, str]:
    """The operator's key, and a tenant key with every tenant scope but ``keys:admin`` (with
    it, a run could revoke its own key and test nothing but 401 after)."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    url = f"http://127.0.0.1:{server.http_port}"
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=auth) as http:
        assert (await http.post("/admin/plans", json={"name": "fuzz"})).status_code == 201
        tenant = await http.post("/admin/tenants", json={"name": "fuzz", "plan": "fuzz"})
        assert tenant.status_code == 201, tenant.text
        scopes = ["infer", "models:read", "models:write", "usage:read", "audit:read"]
        key = await http.post(
            f"/admin/tenants/{tenant.json()['id']}/keys", json={"name": "fuzz", "scopes": scopes}
        )
        assert key.status_code == 201, key.text
        secret = key.json()["secret"]
        works = await http.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
        assert works.status_code == 200, works.text
    return {"operator": ADMIN, "tenant": secret}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("who", ["operator", "tenant"])
async def test_the_whole_api_keeps_its_openapi_promises(
    server: Server, credentials: dict[str, str], who: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.api.openapi_hooks",
        "NO_COLOR": "1",
    }
    process = await asyncio.create_subprocess_exec(
        str(ST),
        "--no-color",
        "run",
        f"http://127.0.0.1:{server.http_port}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,fuzzing",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--header",
        f"Authorization: Bearer {credentials[who]}",
        cwd=tmp_path,  # schemathesis keeps a .schemathesis folder where it runs
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 200)
    report = output.decode("utf-8", "replace")
    assert process.returncode == 0, report[-20_000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated is not None, report[-5_000:]
    assert int(generated[1]) == int(generated[2]) > 0, report[-5_000:]
    operations = re.search(r"(\d+) selected", report)
    assert operations is not None and int(operations[1]) >= 50, report[-5_000:]
