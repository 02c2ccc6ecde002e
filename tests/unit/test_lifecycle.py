"""The composition root's lifecycle list: services start in order and close in reverse,
every one of them closing whether or not it started; a loop is cancelled on close; and a
server's components close in the order the shutdown relies on (jobs first, the node's
announcement next, the models before the stores they write to, the model threads last)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelgate.boot.lifecycle import Lifecycle, Loop, Step
from modelgate.boot.serving import build_components
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS


class Recorded:
    def __init__(self, name: str, log: list[str], *, fail_start: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail_start = fail_start

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} did not start")
        self.log.append(f"start {self.name}")

    async def close(self) -> None:
        self.log.append(f"close {self.name}")


async def test_services_start_in_order_and_close_in_reverse() -> None:
    log: list[str] = []
    lifecycle = Lifecycle([Recorded(name, log) for name in "abc"])
    await lifecycle.start()
    await lifecycle.close()
    assert log == ["start a", "start b", "start c", "close c", "close b", "close a"]


async def test_a_failed_start_stops_there_and_close_closes_every_service() -> None:
    log: list[str] = []
    lifecycle = Lifecycle(
        [Recorded("a", log), Recorded("b", log, fail_start=True), Recorded("c", log)]
    )
    with pytest.raises(RuntimeError, match="b did not start"):
        await lifecycle.start()
    await lifecycle.close()
    assert log == ["start a", "close c", "close b", "close a"]


async def test_a_step_does_only_what_it_is_given() -> None:
    log: list[str] = []

    async def closing() -> None:
        log.append("closed")

    step = Step("only closes", close=closing)
    await step.start()
    await step.close()
    assert log == ["closed"]
    assert repr(step) == "Step('only closes')"


async def test_a_loop_runs_once_started_and_is_cancelled_on_close() -> None:
    ticks: list[int] = []

    async def run() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.001)

    loop = Loop("ticker", run)
    await loop.close()  # never started: nothing to cancel
    await loop.start()
    await asyncio.sleep(0.02)
    await loop.close()
    await asyncio.sleep(0)
    seen = len(ticks)
    await asyncio.sleep(0.02)
    assert seen > 0
    assert len(ticks) == seen


async def test_a_servers_components_close_in_the_order_shutdown_relies_on(
    tmp_path: Path,
) -> None:
    components = build_components(
        Settings(model_repository=FIXTURE_MODELS, data_dir=tmp_path, cache_enabled=True)
    )
    try:
        names = [getattr(s, "name", type(s).__name__) for s in components.lifecycle().services]
    finally:
        await components.close()
    closing = list(reversed(names))
    assert closing[0] == "jobs"
    assert closing[-1] == "model threads"
    assert closing.index("rollout") < closing.index("ModelRegistry")
    assert closing.index("shadows") < closing.index("ModelRegistry")
    for recorder in ("AlertEvaluator", "UsageRecorder", "FeedbackRecorder"):
        assert closing.index("ModelRegistry") < closing.index(recorder)
    # the last alerts may flush feedback (concept drift): alerts close before feedback
    assert closing.index("AlertEvaluator") < closing.index("FeedbackRecorder")
    assert closing.index("FeedbackRecorder") < closing.index("rate limiter")
    assert closing.index("result cache") < closing.index("database")
    # deployments are read before the models load
    assert names.index("deployments") < names.index("ModelRegistry")
