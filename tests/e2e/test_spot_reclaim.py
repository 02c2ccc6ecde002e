"""A spot node reclaimed at short notice hands its job back: real processes on a shared
PostgreSQL database. A node started with ``MODELGATE_CAPACITY_CLASS=spot`` runs a job whose
items take a while each; once a few are done it gets SIGTERM, and SIGKILL ``GRACE_S``
later (a cloud's reclaim notice, shorter than the job). An on-demand node then runs the
rest. The job succeeds with every item's result written once, and the model's own log
shows every item ran to completion exactly once: none lost, none run twice."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ADMIN_DSN, AUTH, RunningServer, admin_sql, start_server, stop_server

ITEMS = 24
DELAY_S = 0.4  # per item; two at a time: the job takes about 5 s, the notice is 2 s
GRACE_S = 2.0
MODEL = """
runtime: python
artifact: model.py
preload: true
execution: thread
runtime_options: {{class: Counted, delay_s: {delay}, log: "{log}"}}
inputs:
  - {{name: x, datatype: INT32, shape: [-1, 2]}}
outputs:
  - {{name: total, datatype: INT64, shape: [-1]}}
"""
CODE = """
import time

import numpy as np

from modelgate.model import PythonModel


class Counted(PythonModel):
    def predict(self, inputs):
        time.sleep(float(self.options["delay_s"]))
        with open(self.options["log"], "a") as log:  # one line per item run to completion
            for row in inputs["x"]:
                if row[1] == 7:  # an item's (warm-up rows are zeros)
                    log.write(f"{int(row[0])}\\n")
        return {"total": inputs["x"].astype(np.int64).sum(axis=1)}
"""


@pytest.fixture
def database() -> Iterator[str]:
    name = f"modelgate_spot_{secrets.token_hex(6)}"
    asyncio.run(admin_sql(ADMIN_DSN, f'CREATE DATABASE "{name}"'))
    try:
        yield f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(admin_sql(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _node(models: Path, workdir: Path, env: dict[str, str]) -> RunningServer:
    return start_server(models, workdir, "--role", "node", env=env)


def test_a_reclaimed_spot_node_loses_no_job_item_and_runs_none_twice(
    database: str, tmp_path: Path
) -> None:
    executions = tmp_path / "executions.log"
    models = tmp_path / "models"
    (models / "counted" / "1").mkdir(parents=True)
    (models / "counted" / "model.yaml").write_text(MODEL.format(delay=DELAY_S, log=executions))
    (models / "counted" / "1" / "model.py").write_text(CODE)
    env = {
        "MODELGATE_DATABASE_URL": database,
        "MODELGATE_JOBS_ITEM_CONCURRENCY": "2",
        "MODELGATE_JOBS_POLL_SECONDS": "0.2",
        "MODELGATE_LOG_FORMAT": "text",
        "MODELGATE_LOG_LEVEL": "info",
    }
    spot = _node(models, tmp_path / "spot", {**env, "MODELGATE_CAPACITY_CLASS": "spot"})
    on_demand: RunningServer | None = None
    try:
        rows = [
            {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 2], "data": [i, 7]}]}
            for i in range(ITEMS)
        ]
        with httpx.Client(base_url=spot.url, headers=AUTH, timeout=30) as client:
            response = client.post("/v1/jobs", json={"model": "counted", "requests": rows})
            assert response.status_code == 200, response.text
            job_id = response.json()["id"]
        deadline = time.monotonic() + 60
        while not executions.exists() or len(executions.read_text().split()) < 3:
            assert time.monotonic() < deadline, "the spot node ran no item"
            time.sleep(0.05)
        # the reclaim: SIGTERM, then SIGKILL after the notice, whatever state it is in
        spot.process.send_signal(signal.SIGTERM)
        noticed = time.monotonic()
        try:
            spot.process.wait(timeout=GRACE_S)
            ended = f"exited by itself {time.monotonic() - noticed:.2f} s after SIGTERM"
        except subprocess.TimeoutExpired:
            spot.process.kill()
            spot.process.wait()
            ended = f"killed after the {GRACE_S} s notice"
        by_spot = Counter(executions.read_text().split())
        assert sum(by_spot.values()) < ITEMS, "the job ended before the notice: no test"
        on_demand = _node(models, tmp_path / "on-demand", env)
        with httpx.Client(base_url=on_demand.url, headers=AUTH, timeout=30) as client:
            deadline = time.monotonic() + 60
            while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] != "succeeded":
                assert job["status"] in ("queued", "running"), job
                assert time.monotonic() < deadline, f"the job did not end: {job}"
                time.sleep(0.1)
            results = client.get(f"/v1/jobs/{job_id}/results?limit=1000").json()["data"]
        runs = Counter(executions.read_text().split())
        spot_log = spot.log.read_text(errors="replace")
        print(
            f"\nspot node ran {sum(by_spot.values())} of {ITEMS} items, {ended}; "
            f"on-demand node ran {sum(runs.values()) - sum(by_spot.values())}; "
            f"attempts {job['attempts']}; handed back: {'handed back' in spot_log}"
        )
        assert [r["index"] for r in results] == list(range(ITEMS))  # each result once
        assert all(r["status"] == "ok" for r in results)
        assert [r["response"]["outputs"][0]["data"] for r in results] == [
            [i + 7] for i in range(ITEMS)
        ]
        assert runs == Counter(str(i) for i in range(ITEMS))  # each ran to completion once
        assert "handed back" in spot_log
    finally:
        if spot.process.poll() is None:
            spot.process.kill()
            spot.process.wait()
        if on_demand is not None:
            stop_server(on_demand)
