"""A model's batch queue feeds the queueing-delay controller (issue 15): the wait of each
batch's oldest request is a third signal beside the loop's lag and the requests' sojourn,
with the same rule and bounds, so that a saturated model sheds while the loop is idle; the
registry's load hook connects a batched version to it. Manual clock for the controller; the
batcher's report is checked against a wait the test imposes (a lower bound, no timing)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.admission.overload import QueueDelay
from modelgate.core.serving.batching import BatchingRuntime
from modelgate.core.serving.execution import PredictorRuntime
from modelgate.core.serving.manifest import BatchingPolicy
from modelgate.core.serving.ports import Arrays, Timing
from modelgate.core.serving.registry import LoadedVersion
from modelgate.testing import ManualClock, RecordingPredictor

TARGET, INTERVAL = 0.05, 0.5


def controller(clock: ManualClock, counted: list[int | None]) -> QueueDelay:
    return QueueDelay(
        target_s=TARGET, interval_s=INTERVAL, ready_after_s=2.0, clock=clock, count=counted.append
    )


def batches(delays: QueueDelay, clock: ManualClock, wait: float, seconds: float) -> None:
    """A batch whose oldest request waited ``wait`` every 10 ms, and a loop-lag sample of 0
    every 20 ms (the model runs off the loop: the loop is idle)."""
    for step in range(round(seconds / 0.01)):
        clock.now += 0.01
        delays.queued(wait)
        if step % 2:
            delays.observe(0.0)


def test_a_standing_model_queue_sheds_while_the_loop_is_idle() -> None:
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted)
    batches(delays, clock, 1.5 * TARGET, INTERVAL - 0.05)
    assert not delays.shedding  # not yet a whole interval
    batches(delays, clock, 1.5 * TARGET, 0.1)
    assert delays.shedding and not delays.severe
    batches(delays, clock, 3 * TARGET, INTERVAL + 0.05)
    assert delays.severe
    assert delays.refuses_unread(0.0)  # the protocol refuses before reading
    assert counted == [None]


def test_a_batch_taken_in_time_stops_the_shedding_and_readiness_follows() -> None:
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted)
    batches(delays, clock, 0.2, 3.0)
    assert delays.shedding and not delays.ready()
    batches(delays, clock, TARGET / 2, 0.01)
    assert not delays.shedding and delays.ready()


def test_the_model_queue_verdict_lapses_when_batches_stop() -> None:
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted)
    batches(delays, clock, 0.2, 2 * INTERVAL)
    assert delays.shedding
    clock.now += INTERVAL + 0.01  # no batch for an interval: no queue of them
    delays.observe(0.0)
    assert not delays.shedding


@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0.0, 0.03, 0.12])), max_size=120))
def test_the_signals_shed_apart_whichever_order_they_come_in(
    samples: list[tuple[bool, float]],
) -> None:
    # each signal has its own CoDel run: a low sample of one never ends the other's, and
    # the model queue's lapses when no batch came for an interval
    clock, counted = ManualClock(100.0), []
    delays = controller(clock, counted)
    start: dict[bool, float | None] = {True: None, False: None}  # queue / lag: run start
    says = {True: False, False: False}
    queue_at = -1e9
    for is_queue, delay in samples:
        clock.now += 0.1
        if is_queue:
            delays.queued(delay)
            queue_at = clock.now
        else:
            delays.observe(delay)
            if clock.now - queue_at > INTERVAL:
                start[True], says[True] = None, False
        run = start[is_queue] if delay >= TARGET else None
        start[is_queue] = run = (clock.now if run is None else run) if delay >= TARGET else None
        says[is_queue] = run is not None and clock.now - run >= INTERVAL
        assert delays.shedding == (says[True] or says[False])


class GatedRuntime:
    """An inner runtime whose calls wait for :attr:`gate` (a model busy off the loop)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: list[int] = []

    async def infer(self, inputs: Arrays, timing: Timing | None = None) -> dict[str, Any]:
        self.calls.append(int(inputs["x"].shape[0]))
        await self.gate.wait()
        return {"y": inputs["x"] * 2}

    @property
    def queue_depth(self) -> int:
        return 0

    def close(self) -> None:
        pass


async def test_the_batcher_reports_each_batchs_oldest_wait() -> None:
    inner = GatedRuntime()
    batcher = BatchingRuntime(inner, BatchingPolicy(max_batch_size=2, max_queue_delay_us=0))
    reports: list[float] = []
    batcher.on_queue_wait = reports.append
    calls = [
        asyncio.ensure_future(batcher.infer({"x": np.full((1, 2), i, np.float32)}))
        for i in range(4)
    ]
    await asyncio.sleep(0.05)  # the first batch runs, the next two requests wait behind it
    assert inner.calls == [2]
    inner.gate.set()
    results = await asyncio.gather(*calls)
    assert [r["y"][0, 0] for r in results] == [0, 2, 4, 6]
    assert inner.calls == [2, 2]
    assert len(reports) == 2  # one per batch
    assert reports[1] >= 0.05  # the second batch waited at least as long as the first ran


async def test_without_a_listener_the_batcher_reports_nothing_and_serves() -> None:
    batcher = BatchingRuntime(
        PredictorRuntime(RecordingPredictor(), offload=False), BatchingPolicy(max_batch_size=4)
    )
    assert batcher.on_queue_wait is None
    result = await batcher.infer({"x": np.ones((1, 2), np.float32)})
    assert result["y"].shape == (1, 2)


def test_the_load_hook_connects_a_batched_version_and_leaves_an_unbatched_one() -> None:
    delays = controller(ManualClock(100.0), [])
    batched = BatchingRuntime(GatedRuntime(), BatchingPolicy(max_batch_size=4))
    plain = GatedRuntime()
    for runtime in (batched, plain):
        delays.watch_model(cast(LoadedVersion, _Loaded(runtime)))
    assert batched.on_queue_wait == delays.queued
    assert not hasattr(plain, "on_queue_wait")


class _Loaded:
    def __init__(self, runtime: object) -> None:
        self.runtime = runtime
