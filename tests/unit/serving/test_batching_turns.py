"""A request bigger than a batch runs in chunks that take turns with other requests: it never
holds the model for all of its rows while a small request waits (finding 3)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from modelgate.core.serving.batching import BatchingRuntime
from modelgate.core.serving.execution import PredictorRuntime
from modelgate.core.serving.manifest import BatchingPolicy
from modelgate.core.serving.ports import Arrays
from modelgate.errors import ErrorKind, ModelgateError


class _OwnerPredictor:
    """y = x; records whose rows each call ran (every row of a request holds its owner id)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, ...]] = []
        self._lock = threading.Lock()

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        x = inputs["x"]
        with self._lock:
            self.calls.append(tuple(sorted({float(v) for v in x[:, 0]})))
        return {"y": x.copy()}

    def close(self) -> None:
        pass


def _batcher(predictor: _OwnerPredictor, offload: bool, batch: int) -> BatchingRuntime:
    return BatchingRuntime(
        PredictorRuntime(predictor, offload=offload),
        BatchingPolicy(max_batch_size=batch, max_queue_delay_us=0, max_queue_size=1024),
    )


def _rows(owner: float, n: int) -> dict[str, np.ndarray[Any, Any]]:
    return {"x": np.full((n, 2), owner, dtype=np.float32)}


@pytest.mark.parametrize("offload", [False, True])
async def test_a_small_request_behind_a_huge_one_finishes_first(offload: bool) -> None:
    predictor = _OwnerPredictor()
    batcher = _batcher(predictor, offload, batch=4)
    finished: list[str] = []

    async def call(name: str, inputs: dict[str, np.ndarray[Any, Any]]) -> None:
        result = await batcher.infer(inputs)
        np.testing.assert_array_equal(result["y"], inputs["x"])  # each got its own rows
        finished.append(name)

    huge = asyncio.ensure_future(call("huge", _rows(1.0, 40)))  # 10 chunks of 4
    for _ in range(5):  # the huge request is queued and running
        await asyncio.sleep(0)
    small = asyncio.ensure_future(call("small", _rows(2.0, 1)))
    await asyncio.gather(huge, small)

    assert finished == ["small", "huge"]
    small_call = next(i for i, owners in enumerate(predictor.calls) if 2.0 in owners)
    huge_calls = [i for i, owners in enumerate(predictor.calls) if 1.0 in owners]
    assert len(huge_calls) == 10
    # the small request waited for a chunk or two of the huge one, not for all ten
    assert small_call <= 2 < max(huge_calls), predictor.calls


@pytest.mark.parametrize("offload", [False, True])
async def test_two_huge_requests_take_turns(offload: bool) -> None:
    predictor = _OwnerPredictor()
    batcher = _batcher(predictor, offload, batch=8)
    await asyncio.gather(batcher.infer(_rows(1.0, 32)), batcher.infer(_rows(2.0, 32)))
    owners = [o[0] for o in predictor.calls]
    assert sorted(owners) == [1.0] * 4 + [2.0] * 4
    # neither request ran all of its chunks before the other began
    assert owners.index(2.0) < len(owners) - 1 - owners[::-1].index(1.0)
    assert all(len(o) == 1 for o in predictor.calls)  # chunks of two requests never mix


async def test_a_small_request_arriving_mid_way_runs_before_the_rest() -> None:
    predictor = _OwnerPredictor()
    batcher = _batcher(predictor, offload=False, batch=4)
    small: list[asyncio.Future[Any]] = []
    original = predictor.predict

    def predict(inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        out = original(inputs)
        if len(predictor.calls) == 3:  # the huge request's third chunk: a request arrives
            small.append(asyncio.ensure_future(batcher.infer(_rows(2.0, 1))))
        return out

    predictor.predict = predict  # type: ignore[method-assign]
    await batcher.infer(_rows(1.0, 40))
    await small[0]
    owners = [o[0] for o in predictor.calls]
    assert owners.index(2.0) <= 4, owners  # it waited for one chunk at most, not seven


async def test_a_request_under_way_is_not_refused_when_the_queue_fills() -> None:
    predictor = _OwnerPredictor()
    batcher = BatchingRuntime(
        PredictorRuntime(predictor, offload=False),
        BatchingPolicy(max_batch_size=2, max_queue_delay_us=0, max_queue_size=2),
    )
    others: list[asyncio.Future[Any]] = []
    original = predictor.predict

    async def small() -> Any:
        for _ in range(3):  # a few loop turns: they queue just as the next chunk does
            await asyncio.sleep(0)
        return await batcher.infer(_rows(2.0, 1))

    def predict(inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        out = original(inputs)
        if len(predictor.calls) == 1:  # the big request's first chunk: the queue fills
            others.extend(asyncio.ensure_future(small()) for _ in range(2))
        return out

    predictor.predict = predict  # type: ignore[method-assign]
    result = await batcher.infer(_rows(1.0, 6))  # three chunks of two
    np.testing.assert_array_equal(result["y"], _rows(1.0, 6)["x"])
    # newcomers may be refused while the queue is full; the request under way was not
    answers = await asyncio.gather(*others, return_exceptions=True)
    refused = [a for a in answers if isinstance(a, ModelgateError)]
    assert all(a.kind is ErrorKind.OVERLOADED for a in refused)
    assert len(refused) < len(answers)
    assert [o[0] for o in predictor.calls].count(1.0) == 3
