"""Each caller of a merged batch is charged its share of the batch's compute time, never the
whole of it (issue 11): by rows, or by tokens when the runtime counts them; the shares are
whole nanoseconds and add up to the batch's time exactly."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.batching import BatchingRuntime
from modelgate.core.serving.execution import PredictorRuntime
from modelgate.core.serving.manifest import BatchingPolicy
from modelgate.core.serving.ports import Arrays, Timing
from modelgate.core.serving.registry import LoadedVersion, ModelRegistry
from modelgate.core.serving.requests import InferenceRequest
from modelgate.core.serving.tensors import Tensor
from modelgate.testing import MemoryRepository, RecordingPredictor

#: the rows of each caller of one batch
COMPOSITIONS = st.lists(st.integers(1, 5), min_size=1, max_size=8)
#: a queue delay long enough that a batch only starts once it is full
_WAIT_US = 5_000_000


def _batching(rows: int) -> dict[str, Any]:
    return {"batching": {"max_batch_size": rows, "max_queue_delay_us": _WAIT_US}}


def _x(rows: int, value: float) -> np.ndarray[Any, Any]:
    return np.full((rows, 2), value, np.float32)


def _batch_compute_ns(loaded: LoadedVersion) -> list[int]:
    """The compute time of every batch the version ran (its Triton batch statistics)."""
    return [b["compute_infer"]["ns"] for b in loaded.stats.as_dict()["batch_stats"]]


def _assert_shared(timings: list[Timing], weights: list[int]) -> None:
    compute = timings[0].compute_ns
    assert compute > 0
    assert all(t.compute_ns == compute for t in timings), "the callers ran in one batch"
    shares = [t.charged_ns for t in timings]
    assert sum(shares) == compute  # exactly, in whole nanoseconds
    total = sum(weights)
    for share, weight in zip(shares[1:], weights[1:], strict=True):
        assert share == compute * weight // total
    assert shares[0] - compute * weights[0] // total < len(timings)  # the remainder


# -- by rows, through a registry --------------------------------------------------------
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(composition=COMPOSITIONS, offload=st.booleans())
def test_the_shares_of_one_batch_add_up_to_its_compute_time(
    composition: list[int], offload: bool
) -> None:
    async def run() -> None:
        predictor = RecordingPredictor(delay=0.001)
        manifest = {**_batching(sum(composition)), "execution": "thread" if offload else "inline"}
        registry = ModelRegistry(
            MemoryRepository({"m": {1: manifest}}), {"python": lambda source: predictor}
        )
        try:
            loaded = await registry.acquire("m", None)
            timings = [Timing() for _ in composition]
            await asyncio.gather(
                *(
                    loaded.runtime.infer({"x": _x(rows, i)}, timing)
                    for i, (rows, timing) in enumerate(zip(composition, timings, strict=True))
                )
            )
            assert predictor.calls[-1] == sum(composition)  # one merged batch
            assert _batch_compute_ns(loaded) == [timings[0].compute_ns]
            _assert_shared(timings, composition)
        finally:
            await registry.close()

    asyncio.run(run())


class _Usage:
    """A usage sink that keeps each request's charged compute time."""

    def __init__(self) -> None:
        self.compute_ms: list[float] = []

    def record(self, *args: Any, compute_ms: float, **kwargs: Any) -> None:
        self.compute_ms.append(compute_ms)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(composition=COMPOSITIONS.filter(lambda c: len(c) > 1))
def test_usage_charges_merged_callers_the_batch_once_not_once_each(
    composition: list[int],
) -> None:
    async def run() -> None:
        predictor = RecordingPredictor(delay=0.001)
        registry = ModelRegistry(
            MemoryRepository({"m": {1: _batching(sum(composition))}}),
            {"python": lambda source: predictor},
        )
        usage = _Usage()
        service = InferenceService(registry, usage=usage)
        try:
            await asyncio.gather(
                *(
                    service.infer(InferenceRequest("m", None, [Tensor("x", "FP32", _x(rows, i))]))
                    for i, rows in enumerate(composition)
                )
            )
            loaded = await registry.acquire("m", None)
            [batch_ns] = _batch_compute_ns(loaded)
            charged_ns = [round(ms * 1e6) for ms in usage.compute_ms]
            assert len(charged_ns) == len(composition)
            assert sum(charged_ns) == batch_ns  # not len(composition) * batch_ns
        finally:
            await registry.close()

    asyncio.run(run())


async def test_a_request_bigger_than_a_batch_is_charged_every_chunk() -> None:
    predictor = RecordingPredictor(delay=0.001)
    registry = ModelRegistry(
        MemoryRepository({"m": {1: {"batching": {"max_batch_size": 4}}}}),
        {"python": lambda source: predictor},
    )
    try:
        loaded = await registry.acquire("m", None)
        timing = Timing()
        await loaded.runtime.infer({"x": _x(10, 1.0)}, timing)
        assert predictor.calls[-3:] == [4, 4, 2]
        assert timing.charged_ns == sum(_batch_compute_ns(loaded))  # all three, not the last
    finally:
        await registry.close()


# -- by tokens, when the runtime counts them ----------------------------------------------
class _TokenPredictor:
    """An embedding-shaped model: each text's tokens are its bytes (``token_count``)."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        texts = inputs["text"]
        with self._lock:
            self.calls.append(len(texts))
        counts = np.array([len(t) for t in texts], dtype=np.int64)
        return {"embedding": np.ones((len(texts), 2), np.float32), "token_count": counts}

    def close(self) -> None:
        pass


EMBEDDING: dict[str, Any] = {
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "token_count", "datatype": "INT64", "shape": [-1]},
    ],
    "embedding": {"dimensions": 2, "max_tokens": 64},
}


def _texts(lengths: list[int]) -> np.ndarray[Any, Any]:
    array = np.empty(len(lengths), dtype=object)
    array[:] = [b"t" * n for n in lengths]
    return array


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    composition=st.lists(
        st.lists(st.integers(1, 64), min_size=1, max_size=4), min_size=1, max_size=6
    )
)
def test_an_embedding_models_batch_is_shared_by_tokens(composition: list[list[int]]) -> None:
    """Each caller's texts, as lengths in tokens; a caller's share follows its tokens, not
    its rows (one long text costs more than two short ones)."""

    async def run() -> None:
        predictor = _TokenPredictor()
        manifest = {**EMBEDDING, **_batching(sum(len(c) for c in composition))}
        registry = ModelRegistry(
            MemoryRepository({"m": {1: manifest}}), {"python": lambda source: predictor}
        )
        try:
            loaded = await registry.acquire("m", None)
            timings = [Timing() for _ in composition]
            await asyncio.gather(
                *(
                    loaded.runtime.infer({"text": _texts(lengths)}, timing)
                    for lengths, timing in zip(composition, timings, strict=True)
                )
            )
            assert predictor.calls[-1] == sum(len(c) for c in composition)
            _assert_shared(timings, [sum(lengths) for lengths in composition])
        finally:
            await registry.close()

    asyncio.run(run())


async def test_a_runtime_without_token_counts_shares_by_rows() -> None:
    """``units_output`` names an output the model does not answer: rows decide."""
    batcher = BatchingRuntime(
        PredictorRuntime(RecordingPredictor(delay=0.001), offload=False),
        BatchingPolicy(max_batch_size=4, max_queue_delay_us=_WAIT_US),
        units_output="token_count",
    )
    timings = [Timing(), Timing()]
    await asyncio.gather(
        batcher.infer({"x": _x(1, 1.0)}, timings[0]), batcher.infer({"x": _x(3, 2.0)}, timings[1])
    )
    _assert_shared(timings, [1, 3])
