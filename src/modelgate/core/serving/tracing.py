"""The tracing port: what the core needs to record spans, without importing OpenTelemetry.

An adapter opens the request's span and makes it current; the core's spans (admission, the
wait in the batcher's queue, the runtime call) are children of whatever span is current.
With tracing off the core holds ``None`` instead of a :class:`Tracer`, so the hot path pays
one ``is None`` check per span and creates nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["AttributeValue", "Span", "Tracer", "traced"]

AttributeValue = str | int | float | bool

_T = TypeVar("_T")


class Span(Protocol):
    """One timed operation of a request. Every method is cheap and never raises."""

    def set(self, key: str, value: AttributeValue) -> None:
        """Attach an attribute (an identifier or a count: never a credential or payload)."""

    def fail(self, kind: str) -> None:
        """Mark the operation as failed with an error kind (``ErrorKind`` values)."""

    def end(self, at_ns: int | None = None) -> None:
        """End now, or at ``at_ns`` on the ``time.perf_counter_ns()`` clock."""


class Tracer(Protocol):
    """Starts spans of the request in progress.

    ``start`` returns a child of the current span (the adapter's request span), started now
    or at ``at_ns`` (``time.perf_counter_ns()`` clock, so a span can be recorded after the
    fact from :class:`~modelgate.core.serving.ports.Timing`). The span is not made current: the
    core's spans have no children. Without a current span, the span starts a trace."""

    def start(self, name: str, at_ns: int | None = None) -> Span: ...


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
