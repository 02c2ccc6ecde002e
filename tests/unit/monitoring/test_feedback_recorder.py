"""The feedback recorder's background writes: in steps that leave the event loop free, with
every prediction written exactly once whatever the store does (fails for a while, refuses
one row)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from modelgate.core.monitoring.feedback_recorder import WRITE_STEP, FeedbackRecorder
from modelgate.core.monitoring.predictions import PredictionRecord
from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.core.serving.requests import CompletedInference, InferenceRequest, InferenceResponse
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.feedback import MemoryFeedbackStore

pytestmark = pytest.mark.asyncio

MANIFEST = parse_manifest(
    "scorer",
    {
        "runtime": "onnxruntime",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1, 2]}],
        "feedback": {"enabled": True},
    },
)


class FlakyStore(MemoryFeedbackStore):
    """Counts appends; fails the ones listed (UNAVAILABLE) and refuses one request id."""

    def __init__(self, fail_calls: set[int], refuse: str | None = None) -> None:
        super().__init__()
        self.calls: list[int] = []
        self._fail = fail_calls
        self._refuse = refuse

    async def append(self, records: Sequence[PredictionRecord]) -> None:
        self.calls.append(len(records))
        if len(self.calls) in self._fail:
            raise ModelgateError(ErrorKind.UNAVAILABLE, "the database is unavailable")
        if any(r.request_id == self._refuse for r in records):
            raise ModelgateError(ErrorKind.INVALID_ARGUMENT, "refused")
        await super().append(records)


def completed(manifest: ModelManifest, number: int) -> CompletedInference:
    x = np.zeros((1, 2), np.float32)
    request = InferenceRequest("scorer", None, [Tensor("x", "FP32", x)], id=f"r{number}")
    probabilities = np.array([[0.25, 0.75]], np.float32)
    response = InferenceResponse("scorer", "1", [Tensor("p", "FP32", probabilities)])
    return CompletedInference(None, request, response, manifest, {"x": x})


async def test_a_large_flush_is_written_in_steps_and_never_blocks_the_loop_for_long() -> None:
    store = FlakyStore(set())
    recorder = FeedbackRecorder(store, max_pending=100_000, write_step=100)
    for n in range(450):
        recorder.completed(completed(MANIFEST, n))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    assert await recorder.flush() == 450
    task.cancel()
    assert store.calls == [100, 100, 100, 100, 50]
    assert ticks >= 5  # the loop ran other work between the steps of building rows
    assert recorder.pending == 0
    found = await store.find("anonymous", "r449")
    assert [(p.predicted, p.score) for p in found] == [(1, 0.75)]


async def test_a_store_that_fails_midway_loses_and_doubles_nothing() -> None:
    store = FlakyStore({2})  # the second step fails: the database went away
    recorder = FeedbackRecorder(store, max_pending=100_000, write_step=100)
    for n in range(450):
        recorder.completed(completed(MANIFEST, n))
    assert await recorder.flush() == 100
    assert recorder.pending == 350  # kept for the next flush
    assert await recorder.flush() == 350
    assert recorder.pending == 0
    assert recorder.dropped == 0
    for n in range(450):
        assert len(await store.find("anonymous", f"r{n}")) == 1


async def test_a_row_the_store_refuses_costs_only_that_row() -> None:
    store = FlakyStore(set(), refuse="r7")
    recorder = FeedbackRecorder(store, max_pending=100_000)
    for n in range(300):
        recorder.completed(completed(MANIFEST, n))
    assert await recorder.flush() == 299
    assert recorder.dropped == 1
    assert await store.find("anonymous", "r7") == []
    assert len(await store.find("anonymous", "r8")) == 1


async def test_rows_are_written_write_step_at_a_time_by_default() -> None:
    store = FlakyStore(set())
    recorder = FeedbackRecorder(store, max_pending=100_000)
    for n in range(WRITE_STEP * 2 + 7):
        recorder.completed(completed(MANIFEST, n))
    assert await recorder.flush() == WRITE_STEP * 2 + 7
    assert store.calls == [WRITE_STEP, WRITE_STEP, 7]
