"""A span around one awaited call, through the tracing port.

The port (:class:`~modelgate.core.serving.ports.Tracer`,
:class:`~modelgate.core.serving.ports.Span`) is what the core needs to record spans without
importing OpenTelemetry. An adapter opens the request's span and makes it current; the core's
spans (admission, the wait in the batcher's queue, the runtime call) are children of whatever
span is current. With tracing off the core holds ``None`` instead of a tracer, so the hot path
pays one ``is None`` check per span and creates nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from modelgate.core.serving.ports import Tracer
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "traced",
]


_T = TypeVar("_T")


async def traced(tracer: Tracer, name: str, call: Awaitable[_T]) -> _T:
    """Await ``call`` inside a span named ``name``, failed with the error's kind if it raises."""
    span = tracer.start(name)
    try:
        return await call
    except ModelgateError as exc:
        span.fail(exc.kind.value)
        raise
    except asyncio.CancelledError:  # the client went away
        span.fail("cancelled")
        raise
    except BaseException:  # a bug: the span says so, the caller handles it
        span.fail(ErrorKind.INTERNAL.value)
        raise
    finally:
        span.end()
