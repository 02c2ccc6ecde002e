"""Schemathesis against the admin API's served OpenAPI document, every check on, a fixed seed:
no server error, no status the document does not list, no answer that breaks its schema,
``Allow`` right on 405, credentials required, with a tenant key that holds every tenant scope
and with the operator key, on SQLite and on PostgreSQL + Redis.

It runs the ``st`` command line against the real server (the ``world`` of the attack
suite), so what it tests is what a client gets over HTTP; its configuration is
``schemathesis.toml`` and its hooks ``schemathesis_hooks.py`` beside this file. A failure
prints schemathesis' report: each case with a ``curl`` line that reproduces it.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.api.attacks.world import World

pytestmark = pytest.mark.asyncio(loop_scope="module")

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
ST = Path(sys.executable).parent / "st"
#: test cases per operation and phase (24 operations, four runs: 2-3 minutes in all on 2 busy cores)
MAX_EXAMPLES = 10
SEED = 16
#: what a tenant key is refused (403) whatever it sends
OPERATORS_ONLY = {
    "GET /admin/audit/verify",
    "GET /admin/models/{model}/deployment",
    "PUT /admin/models/{model}/deployment",
    "POST /admin/models/{model}/deployment/promote",
    "POST /admin/models/{model}/deployment/rollback",
    "GET /admin/plans",
    "POST /admin/plans",
    "PUT /admin/prices/{target}",
    "DELETE /admin/prices/{target}",
}


async def run_schemathesis(world: World, credential: str, workdir: Path) -> tuple[int, str]:
    url = f"http://127.0.0.1:{world.server.http_port}/admin/openapi.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.api.attacks.schemathesis_hooks",
        "NO_COLOR": "1",
        "MODELGATE_SUITE_KEY_ID": f"key_{credential}",
    }
    process = await asyncio.create_subprocess_exec(
        str(ST),
        "--no-color",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        url,
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",  # several workers trip a thread race in hypothesis' lambda descriptions
        "--request-timeout",
        "20",
        "--header",
        f"Authorization: Bearer {world.secrets[credential]}",
        cwd=workdir,  # schemathesis keeps a .schemathesis folder where it runs
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, output.decode("utf-8", "replace")


@pytest.mark.timeout(360)
@pytest.mark.parametrize("credential", ["acme_ops", "admin"])
async def test_the_admin_api_keeps_its_openapi_promises(
    world: World, credential: str, tmp_path: Path
) -> None:
    code, report = await run_schemathesis(world, credential, tmp_path)
    assert code == 0, report[-20_000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated is not None, report[-5_000:]
    assert int(generated[1]) == int(generated[2]) >= 24 * MAX_EXAMPLES, report[-5_000:]
    # the operator reaches every operation; a tenant only those of tenants
    refused = re.findall(
        r"^\s+- (GET|POST|PUT|DELETE) (\S+)$", report.split("Authentication failed")[-1], re.M
    )
    expected = set() if credential == "admin" else OPERATORS_ONLY
    assert ("Authentication failed" in report) == bool(expected), report[-5_000:]
    if expected:
        assert {f"{m} {p}" for m, p in refused} <= expected, report[-5_000:]
    assert "Server error" not in report
