"""``steps``: the CPU µs of each step of a credit-risk REST inference with a tenant key, every
feature on as ``make run`` builds it (issue 11; the table's arithmetic is ``bench.step_costs``).

Two measurements of one request stream (``RestApp`` called in-process, one request at a time,
the loop let run its other tasks every 100 requests so that the recorders flush as in a
server), both in CPU time, so that what other processes take of a shared CPU counts little:

- ablation: the process's CPU per request of the plain stream with every feature on against
  the same stream with one feature switched off, in pairs whose order alternates by round,
  plus a control pair that switches nothing;
- timers: the stream with a timer of the loop thread's CPU time around each step's call
  (less the timer's own share, calibrated), every feature on, then every switch off,
  alternating. A step whose answer is awaited is timed in its own stretches (the call, then
  each run of its coroutine up to a suspension), not across its waits, in which the loop runs
  other work; the run also counts the batcher's flush callback, where a request it queued
  (a probe of the queue, one in ``PROBE_EVERY``) is run.

A switch sets what the setting or the manifest section it stands for would leave unset
(``RestApp.authenticator``, ``InferenceService.admission``, ``.anomalies``, ``.cache``,
``.usage``, ``.observer``, a listener, ``CallPipeline.requests``), and the timers are
attributes set on the built objects: no source change, and both are undone after each run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

from bench.inprocess.asgi import Counted, post_scope
from bench.step_costs import CONTROL, STEPS
from bench.workloads import CREDIT, credit_json

#: an attribute's value before a run set it (absent: it was the class's method)
_ABSENT = object()

#: each feature's switch: the (object, attribute, value) settings that turn it off
SWITCHES: dict[str, Callable[[Any], list[tuple[Any, str, Any]]]] = {
    "auth": lambda c: [(c.rest_app, "authenticator", None)],
    "admission": lambda c: [
        (c.service, "admission", None),
        (c.rest_app, "refusals", None),
        (c.rest_app, "overload", None),
    ],
    "anomaly": lambda c: [(c.service, "anomalies", None)],
    "cache": lambda c: [(c.service, "cache", None)],
    "metering": lambda c: [(c.service, "usage", None)],
    "metrics": lambda c: [(c.service, "observer", None)],
    "monitoring": lambda c: [(c.service, "listeners", _without(c.service.listeners, c.monitor))],
    "feedback": lambda c: [(c.service, "listeners", _without(c.service.listeners, c.feedback))],
    "log": lambda c: [
        (c.rest_app.pipeline, "requests", None),
        (c.rest_app.pipeline, "observed", c.rest_app.pipeline.tracer is not None),
    ],
    CONTROL: lambda c: [],
}


def _without(listeners: tuple[Any, ...], one: Any) -> tuple[Any, ...]:
    return tuple(listener for listener in listeners if listener is not one)


@contextmanager
def _setting(changes: list[tuple[Any, str, Any]]) -> Iterator[None]:
    """Set each attribute, in order; put back every one afterwards, in reverse."""
    saved: list[tuple[Any, str, Any]] = []
    try:
        for target, name, value in changes:
            saved.append((target, name, _current(target, name)))
            setattr(target, name, value)
        yield
    finally:
        for target, name, before in reversed(saved):
            if before is _ABSENT:
                delattr(target, name)
            else:
                setattr(target, name, before)


def _current(target: Any, name: str) -> Any:
    """The attribute's own value (``_ABSENT`` for a method looked up on the class)."""
    if not hasattr(target, "__dict__") or name not in vars(target):
        return getattr(target, name) if name in getattr(type(target), "__slots__", ()) else _ABSENT
    return vars(target)[name]


def switched_off(components: Any, names: list[str]) -> list[tuple[Any, str, Any]]:
    """The settings that switch off ``names``, applied in order (listeners compose)."""
    changes: list[tuple[Any, str, Any]] = []
    for name in names:
        for target, attribute, value in SWITCHES[name](components):
            if attribute == "listeners":  # the listeners left after the earlier switches
                earlier = [v for t, a, v in changes if t is target and a == attribute]
                current = earlier[-1] if earlier else target.listeners
                value = tuple(v for v in current if v in value)
            changes.append((target, attribute, value))
    return changes


class StepTimers:
    """CPU nanoseconds of the loop's thread (``thread_time_ns``: time another process or
    thread takes is not counted) spent in each step's calls since :meth:`reset`, less the
    timer's own share of each window it timed (:meth:`calibrate`): a call, or a stretch of
    an awaited one (:meth:`awaited`); ``calls`` counts the windows."""

    def __init__(self) -> None:
        self.ns = {spec.name: 0 for spec in STEPS}
        self.calls = {spec.name: 0 for spec in STEPS}
        #: what an empty window measures: the part of a clock read inside the window
        self.window_ns = 0.0

    def calibrate(self, count: int = 200_000) -> float:
        clock, spent = time.thread_time_ns, 0
        for _ in range(count):
            start = clock()
            spent += clock() - start
        self.window_ns = spent / count
        return self.window_ns

    def reset(self) -> None:
        for name in self.ns:
            self.ns[name] = self.calls[name] = 0

    def per_request_us(self, requests: int) -> dict[str, float]:
        """Each step's µs per request, less the timer's windows."""
        return {
            name: (spent - self.calls[name] * self.window_ns) / requests / 1e3
            for name, spent in self.ns.items()
        }

    def sync(self, step: str, call: Callable[..., Any]) -> Callable[..., Any]:
        ns, calls, clock = self.ns, self.calls, time.thread_time_ns

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return call(*args, **kwargs)
            finally:
                ns[step] += clock() - start
                calls[step] += 1

        return timed

    def awaited(self, step: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call``, whose answer is awaited, timed in its own stretches only: the call with
        the first run of its awaitable, then each later run up to a suspension or the end.
        A timer around the ``await`` would also count what the loop runs while the step
        waits (the loop turn of a request the batcher queues, and whatever background task
        runs in it). A step that never suspends is one window, as a synchronous one."""
        ns, calls, clock = self.ns, self.calls, time.thread_time_ns

        def add(start: int) -> None:
            ns[step] += clock() - start
            calls[step] += 1

        async def timed(*args: Any, **kwargs: Any) -> Any:
            return await _Stretches(lambda: call(*args, **kwargs), add, clock)

        return timed


class _Stretches:
    """Calls ``start_call`` and awaits its answer as ``await`` would, passing what it yields
    to the loop and what the loop sends back; reports each stretch it runs (``add(start)``,
    ``start`` read from ``clock`` when the stretch began), none of the time it is suspended."""

    def __init__(
        self, start_call: Callable[[], Any], add: Callable[[int], None], clock: Callable[[], int]
    ) -> None:
        self._start_call = start_call
        self._add = add
        self._clock = clock

    def __await__(self) -> Generator[Any, Any, Any]:
        add, clock = self._add, self._clock
        start = clock()
        try:
            steps = self._start_call().__await__()
        except BaseException:
            add(start)
            raise
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as done:
                add(start)
                return done.value
            except BaseException:
                add(start)
                raise
            add(start)
            try:  # suspended: the loop's time, not the step's
                value, error = (yield yielded), None
            except BaseException as exc:  # a cancellation, passed on into the step
                value, error = None, exc
            start = clock()


def timed_pipeline(original: Any, timers: StepTimers) -> Any:
    """A copy of the REST app's ``CallPipeline`` whose authentication and log line are timed
    (its ``__slots__`` leave no room for an attribute, so a subclass carries them)."""
    from modelgate.api.call import CallPipeline

    class TimedCallPipeline(CallPipeline[Any]):
        def authentication(self, *args: Any) -> Any:
            return self.timed_authentication(*args)

        def finish(self, *args: Any, **kwargs: Any) -> None:
            self.timed_finish(*args, **kwargs)

    pipeline = TimedCallPipeline(
        original.protocol,
        original.client_of,
        abuse=original.abuse,
        tracer=original.tracer,
        requests=original.requests,
    )
    pipeline.timed_authentication = timers.awaited(
        "auth", lambda *a: CallPipeline.authentication(pipeline, *a)
    )
    pipeline.timed_finish = timers.sync(
        "log", lambda *a, **k: CallPipeline.finish(pipeline, *a, **k)
    )
    return pipeline


def timed_steps(components: Any, timers: StepTimers) -> list[tuple[Any, str, Any]]:
    """The settings that put a timer around each step's call."""
    import modelgate.api.rest.inference as rest_inference

    app, service, metrics = components.rest_app, components.service, components.metrics
    admission = service.admission
    changes: list[tuple[Any, str, Any]] = [
        (app, "pipeline", timed_pipeline(app.pipeline, timers)),
        (service, "_admit", timers.awaited("admission", service._admit)),
        (admission, "release", timers.sync("admission", admission.release)),
        (
            rest_inference,
            "decode_infer_request",
            timers.sync("decode", rest_inference.decode_infer_request),
        ),
        (service, "_validate", timers.sync("validation", service._validate)),
        (service, "_screen", timers.sync("anomaly", service._screen)),
        (service, "_ticket", timers.sync("cache", service._ticket)),
        (service, "_lookup", timers.awaited("cache", service._lookup)),
        (service, "_run", timers.awaited("run", service._run)),
        *_timed_flushes(components, timers),
        (service.usage, "record", timers.sync("metering", service.usage.record)),
        (metrics, "served", timers.sync("metrics", metrics.served)),
        (metrics, "http_answer", timers.sync("metrics", metrics.http_answer)),
        (service, "_collect_outputs", timers.sync("response", service._collect_outputs)),
        (service, "_respond", timers.sync("response", service._respond)),
        (components.monitor, "completed", timers.sync("monitoring", components.monitor.completed)),
        (
            components.feedback,
            "completed",
            timers.sync("feedback", components.feedback.completed),
        ),
        (
            rest_inference,
            "encode_infer_response",
            timers.sync("encode", rest_inference.encode_infer_response),
        ),
    ]
    if app.refusals is not None:
        changes.append((app.refusals, "refused", timers.sync("admission", app.refusals.refused)))
    return changes


def _timed_flushes(components: Any, timers: StepTimers) -> list[tuple[Any, str, Any]]:
    """The run's work that its awaited call does not do itself: when the batcher queues a
    request (in direct mode, every ``PROBE_EVERY``-th one probes the queue), the batch runs
    in the batcher's ``_flush``, a loop callback, while the request waits."""
    from modelgate.core.serving.batching import BatchingRuntime

    loaded = components.registry.get(CREDIT, None)
    runtime = loaded.runtime if loaded is not None else None
    if not isinstance(runtime, BatchingRuntime):
        return []
    return [(runtime, "_flush", timers.sync("run", runtime._flush))]


async def _stream(
    call: Callable[[], Any], seconds: float, before: Callable[[], None] | None = None
) -> tuple[float, float, int]:
    """(CPU µs per request, wall µs per request, requests) over ``seconds`` after a warm-up;
    ``before`` runs between the two. CPU: the process's, every thread's (the request log's
    writer, ONNX Runtime's), so that a machine shared with other processes counts little.
    Every 100 requests the loop runs its other tasks (the recorders' flushes), in the time
    measured: a server pays for them too."""
    for _ in range(300):
        await call()
    await asyncio.sleep(0)
    if before is not None:
        before()
    count, cpu, start = 0, time.process_time_ns(), time.perf_counter_ns()
    end = start + int(seconds * 1e9)
    while time.perf_counter_ns() < end:
        for _ in range(100):
            await call()
        count += 100
        await asyncio.sleep(0)
    wall = time.perf_counter_ns() - start
    return (time.process_time_ns() - cpu) / count / 1e3, wall / count / 1e3, count


async def measure_steps(
    components: Any, secret: str, seconds: float, rounds: int = 5
) -> dict[str, float]:
    """The figures ``bench.step_costs.costs_from`` reads: ``total`` (the plain request),
    ``timed total``, ``on: STEP`` and ``off: STEP`` (timers), ``on - off #ROUND: NAME``."""
    app = components.rest_app
    body = credit_json()
    scope = post_scope(f"/v2/models/{CREDIT}/infer", body, f"Bearer {secret}")
    channel = Counted(body)
    receive, send, statuses = channel.receive, channel.send, channel.statuses

    def call() -> Any:
        return app(scope, receive, send)

    out: dict[str, float] = {}
    switches = [spec.name for spec in STEPS if spec.switch is not None] + [CONTROL]
    plain: list[float] = []
    walls: list[float] = []
    run_s = seconds / 4
    for index in range(rounds):
        for name in switches if index % 2 == 0 else reversed(switches):
            pair = (False, True) if index % 2 == 0 else (True, False)
            figures: dict[bool, float] = {}
            for off in pair:
                with _setting(switched_off(components, [name]) if off else []):
                    figures[off], wall, _ = await _stream(call, run_s)
                    if not off:
                        walls.append(wall)
            plain.append(figures[False])
            out[f"on - off #{index + 1}: {name}"] = figures[False] - figures[True]
    out["total"] = statistics.median(plain)
    out["total wall"] = statistics.median(walls)
    every = [spec.name for spec in STEPS if spec.switch is not None]
    timers = StepTimers()
    out["timer window ns"] = timers.calibrate()
    timed: dict[str, list[float]] = {}
    for index in range(3):
        for mode in ("on", "off") if index % 2 == 0 else ("off", "on"):
            # the second is built once the first is in place: the switches see the timed ones
            with (
                _setting(timed_steps(components, timers)),
                _setting(switched_off(components, every) if mode == "off" else []),
            ):
                total, _, count = await _stream(call, seconds, timers.reset)
            timed.setdefault(f"timed total, {mode}", []).append(total)
            for step, micros in timers.per_request_us(count).items():
                timed.setdefault(f"{mode}: {step}", []).append(micros)
    for key, values in timed.items():
        out[key] = statistics.median(values)
    out["timed total"] = out.pop("timed total, on")
    if set(statuses) != {200}:
        raise RuntimeError(f"the stream was not all served: {statuses}")
    return out
