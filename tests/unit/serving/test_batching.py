"""The batcher merges concurrent requests, splits answers exactly, and sheds load at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from modelgate.core.serving.batching import PROBE_EVERY, SOLO_STREAK, BatchingRuntime
from modelgate.core.serving.execution import PredictorRuntime
from modelgate.core.serving.manifest import BatchingPolicy
from modelgate.core.serving.ports import Timing
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.testing import RecordingPredictor


def _batcher(
    predictor: RecordingPredictor, offload: bool = False, **policy: int
) -> BatchingRuntime:
    return BatchingRuntime(PredictorRuntime(predictor, offload=offload), BatchingPolicy(**policy))


@pytest.mark.parametrize("offload", [False, True])
async def test_concurrent_requests_are_merged_and_each_gets_its_own_rows(offload: bool) -> None:
    predictor = RecordingPredictor()
    batcher = _batcher(predictor, offload, max_batch_size=16, max_queue_delay_us=0)
    inputs = [np.full((1 + i % 3, 2), i, dtype=np.float32) for i in range(20)]
    results = await asyncio.gather(*(batcher.infer({"x": x}) for x in inputs))
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2)
    assert sum(predictor.calls) == sum(x.shape[0] for x in inputs)
    assert len(predictor.calls) < len(inputs), "no request was merged"
    assert max(predictor.calls) <= 16


async def test_a_lone_request_is_not_delayed_without_a_queue_delay() -> None:
    predictor = RecordingPredictor()
    batcher = _batcher(predictor, max_batch_size=8, max_queue_delay_us=0)
    timing = Timing()
    result = await asyncio.wait_for(batcher.infer({"x": np.ones((1, 2), np.float32)}, timing), 1)
    assert result["y"].shape == (1, 2)
    assert timing.batch_size == 1


async def test_queue_delay_gathers_requests_that_arrive_later() -> None:
    predictor = RecordingPredictor()
    batcher = _batcher(predictor, max_batch_size=8, max_queue_delay_us=50_000)

    async def late(i: int) -> None:
        await asyncio.sleep(0.005 * i)
        await batcher.infer({"x": np.full((1, 2), i, np.float32)})

    await asyncio.gather(*(late(i) for i in range(4)))
    assert predictor.calls == [4]


async def test_a_full_batch_does_not_wait_for_the_delay() -> None:
    predictor = RecordingPredictor()
    batcher = _batcher(predictor, max_batch_size=4, max_queue_delay_us=10_000_000)
    xs = [np.full((1, 2), i, np.float32) for i in range(4)]
    await asyncio.wait_for(asyncio.gather(*(batcher.infer({"x": x}) for x in xs)), 1)
    assert predictor.calls == [4]


async def test_requests_larger_than_the_batch_are_cut_into_chunks() -> None:
    predictor = RecordingPredictor()
    batcher = _batcher(predictor, max_batch_size=4)
    x = np.arange(22, dtype=np.float32).reshape(11, 2)
    result = await batcher.infer({"x": x})
    np.testing.assert_array_equal(result["y"], x * 2)
    assert all(c <= 4 for c in predictor.calls) and sum(predictor.calls) == 11


async def test_requests_with_different_inner_shapes_are_not_merged() -> None:
    predictor = RecordingPredictor()
    batcher = _batcher(predictor, max_batch_size=16)
    a, b = np.ones((1, 2), np.float32), np.ones((1, 3), np.float32)
    ra, rb = await asyncio.gather(batcher.infer({"x": a}), batcher.infer({"x": b}))
    assert ra["y"].shape == (1, 2) and rb["y"].shape == (1, 3)
    assert sorted(predictor.calls) == [1, 1]


async def test_a_full_queue_answers_overloaded_at_once() -> None:
    predictor = RecordingPredictor(delay=0.05)
    batcher = _batcher(predictor, offload=True, max_batch_size=1, max_queue_size=2)
    tasks = [
        asyncio.ensure_future(batcher.infer({"x": np.ones((1, 2), np.float32)})) for _ in range(6)
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    rejected = [r for r in results if isinstance(r, ModelgateError)]
    assert rejected and all(r.kind is ErrorKind.OVERLOADED and r.retry_after for r in rejected)
    assert any(isinstance(r, dict) for r in results)


async def test_a_failing_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    predictor = RecordingPredictor(fail_on=7.0)
    batcher = _batcher(predictor, max_batch_size=8)
    bad = batcher.infer({"x": np.full((1, 2), 7, np.float32)})
    good = batcher.infer({"x": np.full((1, 2), 1, np.float32)})
    results = await asyncio.gather(bad, good, return_exceptions=True)
    assert all(isinstance(r, ModelgateError) and r.kind is ErrorKind.INTERNAL for r in results)
    after = await batcher.infer({"x": np.full((1, 2), 1, np.float32)})
    np.testing.assert_array_equal(after["y"], np.full((1, 2), 2))


async def test_close_fails_queued_requests_and_closes_the_model() -> None:
    predictor = RecordingPredictor()
    batcher = _batcher(predictor, max_batch_size=8, max_queue_delay_us=5_000_000)
    task = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 2), np.float32)}))
    await asyncio.sleep(0.01)
    batcher.close()
    with pytest.raises(ModelgateError) as info:
        await task
    assert info.value.kind is ErrorKind.UNAVAILABLE
    assert predictor.closed


@pytest.mark.parametrize("offload", [False, True])
async def test_solo_load_skips_the_queue_and_concurrency_brings_batching_back(
    offload: bool,
) -> None:
    predictor = RecordingPredictor()
    batcher = _batcher(predictor, offload, max_batch_size=16, max_queue_delay_us=20_000)
    for i in range(SOLO_STREAK + 4):  # one at a time: after the streak, no queue delay
        timing = Timing()
        out = await batcher.infer({"x": np.full((1, 2), i, np.float32)}, timing)
        np.testing.assert_array_equal(out["y"], np.full((1, 2), 2 * i))
        if i > SOLO_STREAK:
            assert timing.queue_ns == 0
    # Now 16 at once: the first probe (at most PROBE_EVERY direct runs away) merges them.
    for _ in range(PROBE_EVERY + 1):
        predictor.calls.clear()
        xs = [np.full((1, 2), j, np.float32) for j in range(16)]
        results = await asyncio.gather(*(batcher.infer({"x": x}) for x in xs))
        for x, result in zip(xs, results, strict=True):
            np.testing.assert_array_equal(result["y"], x * 2)
        if max(predictor.calls) > 1:
            break
    assert max(predictor.calls) > 1, "concurrent requests were never merged again"
    predictor.calls.clear()
    xs = [np.full((1, 2), j, np.float32) for j in range(16)]
    await asyncio.gather(*(batcher.infer({"x": x}) for x in xs))
    assert len(predictor.calls) < 16, "batching did not stay on under concurrency"


async def _suspensions(call: Coroutine[Any, Any, Any]) -> int:
    """How often ``call`` waits for the event loop before it returns: each wait is at least
    one loop turn of the request's latency."""
    waits = 0
    while True:
        try:
            future = call.send(None)
        except StopIteration:
            return waits
        waits += 1
        future._asyncio_future_blocking = False  # as a task does before it waits for it
        await future


async def test_a_lone_inline_request_waits_for_no_loop_turn_except_the_probes() -> None:
    """Once requests come one at a time, an inline model answers within the caller's own
    step: no future, no flush callback, no wake-up (docs/architecture.md, request path 5);
    only every PROBE_EVERY-th request goes through the queue (one wait) to look for company."""
    predictor = RecordingPredictor()
    batcher = _batcher(predictor, max_batch_size=16, max_queue_delay_us=0)
    x = {"x": np.ones((1, 2), np.float32)}
    for _ in range(SOLO_STREAK):
        await batcher.infer(x)

    waits = [await _suspensions(batcher.infer(x)) for _ in range(2 * PROBE_EVERY)]

    assert sorted(waits) == [0] * (2 * PROBE_EVERY - 2) + [1, 1]


async def test_queued_requests_past_their_deadline_are_dropped_before_running() -> None:
    predictor = RecordingPredictor(delay=0.05)
    batcher = _batcher(predictor, offload=True, max_batch_size=2, max_queue_delay_us=0)
    now = time.monotonic()
    first = asyncio.ensure_future(batcher.infer({"x": np.ones((2, 2), np.float32)}))
    await asyncio.sleep(0.01)  # the first batch runs; the next requests queue behind it
    late = [
        batcher.infer({"x": np.full((1, 2), 7, np.float32)}, Timing(deadline=now + 0.02))
        for _ in range(3)
    ]
    patient = batcher.infer({"x": np.full((1, 2), 3, np.float32)}, Timing(deadline=now + 5))
    results = await asyncio.gather(first, *late, patient, return_exceptions=True)
    dropped = [r for r in results[1:4] if isinstance(r, ModelgateError)]
    assert len(dropped) == 3 and {e.kind for e in dropped} == {ErrorKind.DEADLINE_EXCEEDED}
    np.testing.assert_array_equal(results[4]["y"], np.full((1, 2), 6))  # type: ignore[index]
    assert predictor.calls == [2, 1]  # the expired rows were never computed


async def test_an_expired_request_does_not_enter_the_queue() -> None:
    predictor = RecordingPredictor()
    batcher = _batcher(predictor, max_batch_size=4)
    with pytest.raises(ModelgateError) as info:
        await batcher.infer({"x": np.ones((1, 2), np.float32)}, Timing(deadline=0.0))
    assert info.value.kind is ErrorKind.DEADLINE_EXCEEDED and predictor.calls == []
