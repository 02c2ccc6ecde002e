"""How fast the feedback and usage writers empty their backlog, measured alone.

Fills each recorder's backlog with ``--rows`` rows, then times one flush of it: wall rows/s,
and CPU per row on the event loop's thread (``thread_time``) and in the whole process
(``process_time``, which adds aiosqlite's thread). Run it once per tree to compare two
trees (``PYTHONPATH=<tree>/src``); it prints one JSON line per writer::

    PYTHONPATH=$PWD/src python -m bench.writer_throughput --rows 20000
    PYTHONPATH=$PWD/src python -m bench.writer_throughput --url postgresql://postgres@127.0.0.1/x

A PostgreSQL database named in ``--url`` is created when missing and emptied first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from modelgate.core.admission.metering import UsageRecorder
from modelgate.core.admission.usage import UsageRecord
from modelgate.core.monitoring.feedback_recorder import FeedbackRecorder
from modelgate.core.monitoring.predictions import PredictionRecord
from modelgate.storage.sql.engine import create_engine, database_url_for, migrate
from modelgate.storage.sql.feedback import SqlFeedbackStore
from modelgate.storage.sql.usage import SqlUsageStore


def _predictions(n: int, start: datetime, tag: str) -> list[PredictionRecord]:
    records = []
    for i in range(n):
        created = start + timedelta(microseconds=i * 250)
        records.append(
            PredictionRecord(
                id=f"pr_{tag}{i // 2:022x}",
                row=i % 2,
                tenant_id="tenant-1",
                request_id=f"req-{i // 2}",
                inference_id=None if i % 3 else f"oip-{i}",
                model="credit-risk",
                version="1",
                subject=None,
                created_at=created,
                expires_at=created + timedelta(days=30),
                predicted=i % 2,
                score=0.25 + (i % 7) / 10,
            )
        )
    return records


def _usage(n: int, start: datetime) -> dict[Any, UsageRecord]:
    batch: dict[Any, UsageRecord] = {}
    for i in range(n):
        key = (start, f"tenant-{i}", f"key-{i}", "credit-risk", "1", "cpu", "ok", i % 2 == 0)
        record = UsageRecord(*key, requests=3, rows=5, tokens=0)
        record.latency_ms_sum, record.latency_ms_max, record.compute_ms_sum = 3.5, 1.5, 2.0
        batch[key] = record
    return batch


class _HoldMeter:
    """Wraps a store's ``append``: the longest the event loop's thread ran in one call
    (it holds the loop that long, between its awaits, at most: an upper bound)."""

    def __init__(self, append: Any) -> None:
        self._append = append
        self.longest_ms = 0.0

    async def __call__(self, records: Any) -> None:
        started = time.thread_time_ns()
        await self._append(records)
        spent = (time.thread_time_ns() - started) / 1e6
        self.longest_ms = max(self.longest_ms, spent)


async def _timed(work: Any, rows: int) -> dict[str, float]:
    wall, loop_cpu, cpu = time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()
    written = await work
    wall = time.perf_counter_ns() - wall
    loop_cpu = time.thread_time_ns() - loop_cpu
    cpu = time.process_time_ns() - cpu
    assert written == rows, (written, rows)
    return {
        "rows_per_s": round(rows / (wall / 1e9)),
        "loop_us_per_row": round(loop_cpu / rows / 1000, 2),
        "process_us_per_row": round(cpu / rows / 1000, 2),
    }


async def _prepare(url: str) -> str:
    if url.startswith("postgresql"):
        admin = create_engine(database_url_for(".", url.rsplit("/", 1)[0] + "/postgres"))
        name = url.rsplit("/", 1)[1]
        async with admin.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        await admin.dispose()
    resolved = database_url_for(".", url)
    await migrate(resolved)
    return resolved


async def main(rows: int, url: str | None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        resolved = await _prepare(url or f"sqlite:///{Path(scratch) / 'bench.db'}")
        engine = create_engine(resolved)
        try:
            start = datetime(2026, 1, 1, tzinfo=UTC)
            feedback = FeedbackRecorder(SqlFeedbackStore(engine), max_pending=rows)
            feedback._writer.add(_predictions(rows, start, "w"))
            await feedback._writer.write()  # warm: connection, compiled statement
            meter = feedback._writer._append = _HoldMeter(feedback._writer._append)
            feedback._writer.add(_predictions(rows, start, "m"))
            result = await _timed(feedback._writer.write(), rows)
            result["longest_append_loop_ms"] = round(meter.longest_ms, 2)
            print(json.dumps({"writer": "feedback", "rows": rows, **result}))

            usage = UsageRecorder(SqlUsageStore(engine))
            await usage._write_batch(_usage(rows, start))  # warm
            result = await _timed(usage._write_batch(_usage(rows, start)), rows)
            print(json.dumps({"writer": "usage", "rows": rows, **result}))
        finally:
            await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--url", default=None)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rows, arguments.url))
