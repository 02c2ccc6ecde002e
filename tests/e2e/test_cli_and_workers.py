"""The command line against a running server, and several worker processes on one port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import FIXTURE_MODELS
from tests.e2e.conftest import ADMIN_KEY, AUTH, RunningServer, start_server, stop_server


def _cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelgate", *args, "--url", server.url, "--api-key", ADMIN_KEY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_models_list_unload_load(tmp_path: Path) -> None:
    server = start_server(FIXTURE_MODELS, tmp_path)
    try:
        listed = _cli(server, "models", "list")
        assert listed.returncode == 0, listed.stderr
        assert "doubler" in listed.stdout and "READY" in listed.stdout
        assert _cli(server, "models", "unload", "doubler").returncode == 0
        ready = httpx.get(f"{server.url}/v2/models/doubler/ready", headers=AUTH)
        assert ready.status_code == 503
        assert _cli(server, "models", "load", "doubler").returncode == 0
        assert httpx.get(f"{server.url}/v2/models/doubler/ready", headers=AUTH).status_code == 200
        missing = _cli(server, "models", "load", "no-such-model")
        assert missing.returncode == 1 and "404" in missing.stdout
    finally:
        assert stop_server(server) == 0


def test_two_workers_share_the_ports_and_stop_cleanly(tmp_path: Path) -> None:
    server = start_server(FIXTURE_MODELS, tmp_path, "--workers", "2")
    try:
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
        pids = children.read_text().split()
        assert len(pids) >= 2  # the two workers (spawn may add its resource tracker)
        body = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
        }
        for _ in range(20):  # a new connection each time: the kernel picks a worker
            response = httpx.post(f"{server.url}/v2/models/doubler/infer", json=body, headers=AUTH)
            assert response.status_code == 200
            np.testing.assert_allclose(response.json()["outputs"][0]["data"], [3, 6, 9, 12])
    finally:
        assert stop_server(server) == 0


def test_operator_cli_manages_tenants_and_verifies_the_audit_trail(tmp_path: Path) -> None:
    import sqlite3

    env = {**os.environ, "MODELGATE_DATA_DIR": str(tmp_path / "data")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelgate", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    assert cli("plans", "create", "basic", "--rps", "10").returncode == 0
    created = cli("tenants", "create", "acme", "--plan", "basic")
    assert created.returncode == 0, created.stdout
    tenant = created.stdout.split()[-1]
    key = cli("keys", "create", "--tenant", tenant, "--scope", "infer")
    assert key.returncode == 0 and key.stdout.strip().splitlines()[-1].startswith("mg_live_")
    intact = cli("audit", "verify")
    assert intact.returncode == 0 and "3 records" in intact.stdout
    listed = cli("keys", "list", "--tenant", tenant)
    assert listed.returncode == 0, listed.stdout
    key_id = next(word for word in listed.stdout.split() if word.startswith("key_"))
    rotated = cli("keys", "rotate", key_id, "--overlap-hours", "1")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert rotated.stdout.strip().splitlines()[-1].startswith("mg_live_")
    assert f"{key_id} stops in 1.0 h" in rotated.stdout
    assert cli("keys", "revoke", key_id).returncode == 0
    listed = cli("keys", "list", "--tenant", tenant)
    rows = [line for line in listed.stdout.splitlines() if "key_" in line]
    assert len(rows) == 2  # the replacement, and the revoked original
    assert cli("keys", "revoke", "key_nope").returncode != 0  # an unknown key: an error
    assert cli("audit", "verify").returncode == 0
    # Edit history behind modelgate's back: verify must notice.
    with sqlite3.connect(tmp_path / "data" / "modelgate.db") as db:
        db.execute("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2")
    broken = cli("audit", "verify")
    assert broken.returncode == 1 and "broken at record 2" in broken.stdout
