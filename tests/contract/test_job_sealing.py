"""Job items at rest: with the payload keys, a job's requests, responses and errors are
stored sealed (AES-GCM), on SQLite and PostgreSQL, and read back whole by the queue."""

from __future__ import annotations

import dataclasses
import os

import orjson
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.jobs.jobs import JobResult, JobState
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.crypto import AesGcmCipher
from modelgate.storage.sql.jobs import SqlJobQueue
from modelgate.storage.sql.schema import job_items
from tests.contract.test_job_queue import ITEM, at, job

pytestmark = pytest.mark.asyncio

K1, K2 = os.urandom(32), os.urandom(32)
SECRET_INPUT = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                            "data": [4711.25, 2, 3, 4]}]}  # fmt: skip
RESPONSE = {"model_name": "doubler", "outputs": [{"name": "y", "data": [9422.5, 4, 6, 8]}]}
ERROR = {"code": "invalid_argument", "message": "x 4711.25 is out of range"}


async def _raw(engine: AsyncEngine) -> list[bytes]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(job_items.c.request, job_items.c.response, job_items.c.error)
        )
        return [orjson.dumps(list(row)) for row in rows]


async def test_requests_and_results_are_sealed_at_rest_and_read_back(engine: AsyncEngine) -> None:
    queue = SqlJobQueue(engine, AesGcmCipher({"k1": K1}))
    new = dataclasses.replace(job(1), items=(SECRET_INPUT, ITEM))
    await queue.submit(new, None)
    claimed = await queue.claim("w", at(100), 30)
    assert claimed is not None
    assert claimed.pending == ((0, SECRET_INPUT), (1, ITEM))  # opened for the worker
    assert await queue.complete_item(new.id, JobResult(0, True, RESPONSE, None, at(101)))
    assert await queue.complete_item(new.id, JobResult(1, False, None, ERROR, at(102)))
    await queue.finish(new.id, "w", JobState.SUCCEEDED, None, at(103))

    stored = b"".join(await _raw(engine))
    assert b"$sealed" in stored
    for plain in (b"4711.25", b"9422.5", b"out of range", b"inputs", b"outputs"):
        assert plain not in stored, plain
    results = await queue.results(new.id)
    assert [(r.index, r.response, r.error) for r in results] == [
        (0, RESPONSE, None),
        (1, None, ERROR),
    ]

    # rotation: with k2 active, rows sealed with k1 still open while k1 is configured
    rotated = SqlJobQueue(engine, AesGcmCipher({"k1": K1, "k2": K2}, active="k2"))
    assert [r.response for r in await rotated.results(new.id)] == [RESPONSE, None]
    # without the key that sealed them, they are refused, never returned garbled
    for reader in (SqlJobQueue(engine), SqlJobQueue(engine, AesGcmCipher({"k2": K2}))):
        with pytest.raises(ModelgateError) as refused:
            await reader.results(new.id)
        assert refused.value.kind is ErrorKind.FAILED_PRECONDITION


async def test_a_sealed_value_moved_to_another_item_does_not_open(engine: AsyncEngine) -> None:
    queue = SqlJobQueue(engine, AesGcmCipher({"k1": K1}))
    new = job(2)
    await queue.submit(new, None)
    async with engine.begin() as connection:
        first = (
            await connection.execute(select(job_items.c.request).where(job_items.c.item == 0))
        ).scalar_one()
        await connection.execute(
            update(job_items).where(job_items.c.item == 1).values(request=first)
        )
    with pytest.raises(ModelgateError) as moved:
        await queue.claim("w", at(100), 30)
    assert moved.value.kind is ErrorKind.INTERNAL


async def test_items_stored_before_keys_were_configured_stay_readable(
    engine: AsyncEngine,
) -> None:
    await SqlJobQueue(engine).submit(job(3), None)
    claimed = await SqlJobQueue(engine, AesGcmCipher({"k1": K1})).claim("w", at(100), 30)
    assert claimed is not None and claimed.pending == ((0, ITEM), (1, ITEM))
