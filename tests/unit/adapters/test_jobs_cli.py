"""``modelgate jobs list|show|retry|purge`` on a SQLite database in a data directory,
as an operator runs them: tables a person can read, and exit codes that say what happened."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelgate.cli import app
from modelgate.core.jobs.jobs import JobOwner, JobState, NewJob
from modelgate.storage.sql.engine import create_engine, database_url_for, migrate
from modelgate.storage.sql.jobs import SqlJobQueue

OWNER = JobOwner("ten_acme", "key_1", "key", ("infer",))
ITEM = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
LONG_AGO = datetime.now(UTC) - timedelta(days=400)


def _job(number: int) -> NewJob:
    return NewJob(
        id=f"job_{number:024d}",
        owner=OWNER,
        model="doubler",
        version=None,
        items=(ITEM,),
        priority=0,
        max_attempts=1,
        created_at=LONG_AGO + timedelta(seconds=number),
        request_hash="h",
    )


async def _fill(data_dir: Path) -> None:
    """Job 1 dead-lettered and job 2 cancelled, both 400 days ago; job 3 still queued."""
    url = database_url_for(data_dir)
    await migrate(url)
    engine = create_engine(url)
    try:
        queue = SqlJobQueue(engine)
        for number in (1, 2, 3):
            await queue.submit(_job(number), None)
        claimed = await queue.claim("w", LONG_AGO + timedelta(seconds=10), 30)
        assert claimed is not None and claimed.job.id == _job(1).id
        await queue.retry(_job(1).id, "w", "the model failed", LONG_AGO, LONG_AGO)
        await queue.cancel(_job(2).id, None, LONG_AGO)
    finally:
        await engine.dispose()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    asyncio.run(_fill(tmp_path))
    return {"MODELGATE_DATA_DIR": str(tmp_path), "COLUMNS": "200"}


def test_list_show_retry_and_purge(env: dict[str, str]) -> None:
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["jobs", *args], env=env, terminal_width=200)
        return result.exit_code, result.output

    code, out = run("list", "--tenant", "ten_acme")
    assert code == 0, out
    assert all(_job(n).id in out for n in (1, 2, 3))
    assert "dead" in out and "cancelled" in out and "queued" in out

    code, out = run("show", _job(1).id)
    assert code == 0 and "the model failed" in out and "ten_acme" in out
    code, out = run("show", "job_missing")
    assert code == 1 and "no job job_missing" in out

    code, out = run("retry", _job(3).id)  # queued: nothing to retry
    assert code == 1 and "not retried" in out
    code, out = run("retry", _job(1).id)
    assert code == 0 and "queued again" in out

    code, out = run("purge")  # only the cancelled one: job 1 is queued again, 3 never ended
    assert code == 0 and "1 finished jobs deleted" in out, out
    code, out = run("show", _job(2).id)
    assert code == 1
    code, out = run("list", "--tenant", "ten_acme")
    states = {line.split()[1]: line for line in out.splitlines() if "job_" in line}
    assert set(states) == {_job(1).id, _job(3).id}
    assert all(JobState.QUEUED.value in line for line in states.values())
