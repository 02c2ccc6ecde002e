"""The spans of the request path's steps that are not one awaited call.

A step that is one awaited call (admission, the cache lookup) is wrapped in
:func:`~modelgate.core.serving.tracing.traced`; the route is an instant and the runtime's
queue and run are recorded afterwards from :class:`~modelgate.core.serving.ports.Timing`, so
the batcher needs no tracer. Only called when tracing is on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from modelgate.core.serving.ports import Timing, Tracer
from modelgate.core.serving.registry import LoadedVersion
from modelgate.core.traffic.routing import Choice
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["route_span", "traced_runtime"]


async def traced_runtime(
    tracer: Tracer, loaded: LoadedVersion, inputs: dict[str, np.ndarray[Any, Any]], timing: Timing
) -> dict[str, np.ndarray[Any, Any]]:
    """The runtime call, with its spans recorded afterwards from ``timing``: the wait in the
    batcher's queue, then the run of the batch."""
    called = time.perf_counter_ns()
    try:
        arrays = await loaded.runtime.infer(inputs, timing)
    except BaseException as exc:
        kind = exc.kind if isinstance(exc, ModelgateError) else None
        # a full queue refuses before anything runs
        span = tracer.start("queue" if kind is ErrorKind.OVERLOADED else "runtime", called)
        if kind is not None:
            span.fail(kind.value)
        else:
            span.fail("cancelled" if isinstance(exc, asyncio.CancelledError) else "internal")
        span.end()
        raise
    ran = called + timing.queue_ns
    if loaded.batched:
        tracer.start("queue", called).end(ran)
    span = tracer.start("runtime", ran)
    span.set("modelgate.model", loaded.name)
    span.set("modelgate.model_version", loaded.version)
    span.set("modelgate.batch_size", timing.batch_size)
    span.set("modelgate.hardware", timing.hardware or loaded.hardware)
    if timing.node is not None:  # a gateway's call: the node that answered
        span.set("modelgate.node", timing.node)
    span.end(ran + timing.compute_ns)
    return arrays


def route_span(tracer: Tracer, choice: Choice) -> None:
    """The deployment's pick, as an instant span (the choice is a hash and a lookup)."""
    span = tracer.start("route")
    span.set("modelgate.model", choice.model)
    span.set("modelgate.model_version", choice.version)
    span.set("modelgate.deployment_variant", choice.variant)
    span.set("modelgate.deployment_stage", choice.stage)
    span.end()
