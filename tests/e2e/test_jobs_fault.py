"""Jobs survive a worker killed mid-job: a server and two ``modelgate worker`` processes on a
shared database (a SQLite file, then PostgreSQL), many slow jobs, ``kill -9`` of one worker
while it runs a job. Every job ends succeeded (0 lost), every item has exactly one result
(0 duplicates), and the killed worker's job was run again by the other after its lease."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import FIXTURE_MODELS
from tests.e2e.conftest import ADMIN_KEY, AUTH, start_server, stop_server

ADMIN_DSN = os.environ.get(
    "MODELGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
JOBS = 24
ITEMS = 6  # slow-sum sleeps 50 ms per batch; one item at a time: >= 0.3 s per job
LEASE_S = 3


def _admin_sql(statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(ADMIN_DSN, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(params=["sqlite", "postgres"])
def database_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    name = f"modelgate_e2e_{secrets.token_hex(6)}"
    _admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield {"MODELGATE_DATABASE_URL": f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}"}
    finally:
        _admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start_worker(
    name: str, data_dir: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelgate",
                "worker",
                "--model-repository",
                str(FIXTURE_MODELS),
                "--data-dir",
                str(data_dir),
                "--worker-id",
                name,
                "--log-level",
                "info",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MODELGATE_ADMIN_KEY": ADMIN_KEY, **env},
        )


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {timeout} s")


def test_no_job_is_lost_or_doubled_when_a_worker_is_killed(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **database_env,
        "MODELGATE_JOBS_WORKER": "false",  # only the two workers run jobs
        "MODELGATE_JOBS_LEASE_SECONDS": str(LEASE_S),
        "MODELGATE_JOBS_ITEM_CONCURRENCY": "1",
        "MODELGATE_JOBS_POLL_SECONDS": "0.1",
        "MODELGATE_LOG_FORMAT": "text",
    }
    server = start_server(FIXTURE_MODELS, tmp_path, env=env)
    workers: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: tmp_path / f"worker-{name}.log" for name in ("a", "b")}
    try:
        row = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}]}
        ids = []
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
            for number in range(JOBS):
                body = {"model": "slow-sum", "requests": [row] * ITEMS}
                response = client.post(
                    "/v1/jobs", json=body, headers={"Idempotency-Key": f"fault-{number}"}
                )
                assert response.status_code == 200, response.text
                ids.append(response.json()["id"])
            for name in ("a", "b"):
                workers[name] = _start_worker(name, tmp_path / "data", env, logs[name])
            # kill -9 worker a while it runs a job (its claim is logged before any item runs)
            _wait_for(lambda: b"claimed by a" in logs["a"].read_bytes(), 60, "a claim by a")
            os.kill(workers["a"].pid, signal.SIGKILL)
            workers["a"].wait()
            killed_at = time.monotonic()

            def all_ended() -> bool:
                states = [client.get(f"/v1/jobs/{i}").json()["status"] for i in ids]
                return all(s not in ("queued", "running") for s in states)

            _wait_for(all_ended, 120, "the end of every job")
            jobs = [client.get(f"/v1/jobs/{i}").json() for i in ids]
            results = [client.get(f"/v1/jobs/{i}/results?limit=1000").json()["data"] for i in ids]
        succeeded = sum(1 for j in jobs if j["status"] == "succeeded")
        lost = JOBS - succeeded
        indexes = [[r["index"] for r in items] for items in results]
        duplicates = sum(len(ix) - len(set(ix)) for ix in indexes)
        missing = sum(ITEMS - len(set(ix)) for ix in indexes)
        wrong = sum(
            1
            for items in results
            for r in items
            if r["status"] != "ok" or r["response"]["outputs"][0]["data"] != [3]
        )
        rerun = [j["id"] for j in jobs if j["attempts"] > 1]
        backend = "postgresql" if database_env else "sqlite"
        print(
            f"\n[{backend}] jobs submitted {JOBS}, succeeded {succeeded}, lost {lost}; "
            f"item results {sum(len(ix) for ix in indexes)} of {JOBS * ITEMS}, "
            f"duplicates {duplicates}, missing {missing}, wrong {wrong}; "
            f"jobs run again after the kill {len(rerun)}; "
            f"all ended {time.monotonic() - killed_at:.1f} s after the kill"
        )
        assert (lost, duplicates, missing, wrong) == (0, 0, 0, 0)
        assert rerun, "worker a was killed mid-job: its job must have been run again"
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        stop_server(server)
