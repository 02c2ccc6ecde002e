"""The step timers of bench/inprocess/steps.py: an awaited step counts the stretches it runs,
not what the loop runs while it waits, and is awaited exactly as the call would be."""

from __future__ import annotations

import asyncio

import pytest

import bench.inprocess.steps as steps_module
from bench.inprocess.steps import StepTimers


class FakeClock:
    """A CPU clock that moves only when the test says work was done."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(steps_module.time, "thread_time_ns", fake)
    return fake


async def test_an_awaited_step_counts_its_stretches_not_its_waits(clock: FakeClock) -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def step(x: int) -> int:
        clock.now += 5  # before it suspends
        got = await gate
        clock.now += 7  # after it is woken
        return x + got

    async def background() -> None:
        clock.now += 100  # the loop's other work while the step waits
        gate.set_result(1)

    timers = StepTimers()
    timed = timers.awaited("run", step)
    task = asyncio.get_running_loop().create_task(background())
    assert await timed(41) == 42
    await task
    assert timers.ns["run"] == 12
    assert timers.calls["run"] == 2  # the call with its first stretch, then the second


async def test_a_step_that_never_waits_is_one_window(clock: FakeClock) -> None:
    async def step() -> str:
        clock.now += 9
        return "done"

    timers = StepTimers()
    assert await timers.awaited("auth", step)() == "done"
    assert (timers.ns["auth"], timers.calls["auth"]) == (9, 1)  # one window, as a sync step


async def test_errors_and_cancellation_pass_through(clock: FakeClock) -> None:
    async def failing() -> None:
        await asyncio.sleep(0)
        clock.now += 3
        raise KeyError("gone")

    timers = StepTimers()
    with pytest.raises(KeyError):
        await timers.awaited("cache", failing)()
    assert timers.ns["cache"] == 3

    cleaned: list[bool] = []

    async def waiting() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    task = asyncio.get_running_loop().create_task(timers.awaited("run", waiting)())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]  # the cancellation reached the step itself
