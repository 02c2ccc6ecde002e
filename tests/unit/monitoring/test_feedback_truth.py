"""What the feedback recorder keeps is what the docs say: nothing of a request that withholds
consent, at most ``max_request_rows`` rows of one request and ``max_pending`` rows waiting;
and feedback sent while its prediction is still being written waits for it instead of
answering NOT_FOUND (an unknown id still does, after a bounded wait)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.monitoring.feedback import FeedbackItem, FeedbackService
from modelgate.core.monitoring.feedback_recorder import FeedbackRecorder
from modelgate.core.monitoring.predictions import LabelQuery, PredictionRecord
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.requests import CompletedInference, InferenceRequest, InferenceResponse
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.feedback import MemoryFeedbackStore

MANIFEST = parse_manifest(
    "scorer",
    {
        "runtime": "onnxruntime",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1, 2]}],
        "feedback": {"enabled": True},
    },
)


def completed(
    request_id: str, rows: int = 1, parameters: dict[str, Any] | None = None
) -> CompletedInference:
    x = np.zeros((rows, 2), np.float32)
    request = InferenceRequest(
        "scorer", None, [Tensor("x", "FP32", x)], id=request_id, parameters=parameters or {}
    )
    probabilities = np.tile(np.array([[0.25, 0.75]], np.float32), (rows, 1))
    response = InferenceResponse("scorer", "1", [Tensor("p", "FP32", probabilities)])
    return CompletedInference(None, request, response, MANIFEST, {"x": x})


class SlowStore(MemoryFeedbackStore):
    """Each append waits until ``release`` is set: a write in flight, as on a busy database."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.writing = asyncio.Event()

    async def append(self, records: Sequence[PredictionRecord]) -> None:
        self.writing.set()
        await self.release.wait()
        await super().append(records)


# -- consent ---------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "parameters",
    [
        {"consent": False, "subject": "user-1842"},
        {"consent": "no", "subject": "user-1842"},
        {"log_payload": False, "subject": "user-1842"},
        {"consent": False},
    ],
)
async def test_a_request_that_withholds_consent_leaves_no_prediction(
    parameters: dict[str, Any],
) -> None:
    store = MemoryFeedbackStore()
    recorder = FeedbackRecorder(store, pseudonymize=lambda s: "h" + s[::-1])
    recorder.completed(completed("r-no", parameters=parameters))
    recorder.completed(completed("r-yes", parameters={"subject": "user-1842"}))
    assert await recorder.flush() == 1
    assert await store.find("anonymous", "r-no") == []
    assert recorder.withheld == 1
    kept = await store.find("anonymous", "r-yes")
    assert [p.subject for p in kept] == ["h2481-resu"]  # a pseudonym, never the id


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.booleans(), st.integers(), st.text(max_size=8), st.none()))
def test_only_a_true_consent_parameter_records(value: object) -> None:
    store = MemoryFeedbackStore()
    recorder = FeedbackRecorder(store)
    recorder.completed(completed("r", parameters={"consent": value}))
    written = asyncio.run(recorder.flush())
    allowed = value is True or (isinstance(value, str) and value.lower() == "true")
    assert written == (1 if allowed else 0)


# -- row caps --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_huge_request_records_only_its_first_rows_and_says_so() -> None:
    store = MemoryFeedbackStore()
    recorder = FeedbackRecorder(store, max_request_rows=100, max_pending=1000)
    recorder.completed(completed("big", rows=1_048_576))
    assert recorder.pending == 100  # not a million rows waiting
    assert recorder.truncated_rows == 1_048_576 - 100
    assert await recorder.flush() == 100
    rows = await store.find("anonymous", "big")
    assert [r.row for r in rows] == list(range(100))


@pytest.mark.asyncio
async def test_max_pending_counts_rows_not_requests() -> None:
    store = MemoryFeedbackStore()
    recorder = FeedbackRecorder(store, max_request_rows=400, max_pending=1000)
    for n in range(5):  # 400 rows each: the third would make 1,200 rows waiting
        recorder.completed(completed(f"r{n}", rows=400))
    assert recorder.pending == 800
    assert recorder.dropped == 3
    assert await recorder.flush() == 800
    recorder.completed(completed("after", rows=400))  # room again once written
    assert recorder.pending == 400


# -- feedback that arrives before its prediction is written ------------------------------------


@pytest.mark.asyncio
async def test_feedback_during_a_slow_write_waits_for_it_instead_of_404() -> None:
    store = SlowStore()
    recorder = FeedbackRecorder(store)
    service = FeedbackService(store, recorder)
    recorder.completed(completed("r1"))
    background = asyncio.create_task(recorder.flush())  # the recorder's own flush, in flight
    await store.writing.wait()
    assert recorder.pending == 0  # taken out of the queue, not in the store yet
    submit = asyncio.create_task(service.submit(None, [FeedbackItem("r1", label=1)]))
    await asyncio.sleep(0.01)
    assert not submit.done()  # waiting for the write, not refused
    store.release.set()
    assert await submit == 1
    assert await background == 1
    labelled = await store.labelled(LabelQuery(model="scorer"))
    assert [(x.prediction.request_id, x.label) for x in labelled] == [("r1", 1)]


class LateStore(MemoryFeedbackStore):
    """A prediction another replica writes a few lookups from now."""

    def __init__(self, record: PredictionRecord, after: int) -> None:
        super().__init__()
        self._record = record
        self._after = after
        self.lookups = 0

    async def find(self, tenant_id: str, request_id: str) -> list[PredictionRecord]:
        self.lookups += 1
        if self.lookups == self._after:
            await self.append([self._record])
        return await super().find(tenant_id, request_id)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@pytest.mark.asyncio
async def test_feedback_for_a_row_another_replica_writes_later_is_joined() -> None:
    source = MemoryFeedbackStore()
    recorder = FeedbackRecorder(source)
    recorder.completed(completed("remote"))
    await recorder.flush()
    (record,) = await source.find("anonymous", "remote")
    store = LateStore(record, after=4)
    clock = FakeClock()
    service = FeedbackService(store, wait_s=2.0, monotonic=clock.monotonic, sleep=clock.sleep)
    assert await service.submit(None, [FeedbackItem("remote", label=0)]) == 1
    assert 0 < clock.t <= 2.0


@pytest.mark.asyncio
async def test_feedback_for_an_unknown_id_is_404_after_a_bounded_wait() -> None:
    store = MemoryFeedbackStore()
    clock = FakeClock()
    service = FeedbackService(
        store, FeedbackRecorder(store), wait_s=2.0, monotonic=clock.monotonic, sleep=clock.sleep
    )
    with pytest.raises(ModelgateError) as caught:
        await service.submit(None, [FeedbackItem("never-was", label=1)])
    assert caught.value.kind is ErrorKind.NOT_FOUND
    assert clock.t == pytest.approx(2.0)  # waited, and no longer


class CountingStore(MemoryFeedbackStore):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def find(self, tenant_id: str, request_id: str) -> list[PredictionRecord]:
        self.lookups += 1
        return await super().find(tenant_id, request_id)


@pytest.mark.asyncio
async def test_unknown_ids_sent_at_once_cost_a_bounded_number_of_lookups() -> None:
    """Only ``max_waiting`` submissions look again at once; the others are 404 as soon as
    what this replica holds is written, so a flood of unknown ids is not multiplied into
    store queries."""
    store = CountingStore()
    service = FeedbackService(store, FeedbackRecorder(store), wait_s=0.3, max_waiting=2)
    results = await asyncio.gather(
        *(service.submit(None, [FeedbackItem(f"unknown-{n}", label=1)]) for n in range(20)),
        return_exceptions=True,
    )
    assert all(isinstance(r, ModelgateError) and r.kind is ErrorKind.NOT_FOUND for r in results)
    # two looks each (before and after writing what is held), plus a few for the 2 waiters
    assert store.lookups <= 20 * 2 + 2 * 6
    assert service._waiting == 0
