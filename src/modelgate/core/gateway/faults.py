"""Which failures a node is to blame for, how its breakers count them, and what the caller is
told when no node answered.

A node fault (unreachable, 5xx, timed out, overloaded, or the model missing after all) is
retried on another node; a caller's error (bad input, unknown output) is answered at once.
The caller's answer keeps the last failure's kind, in words that name no node.
"""

from __future__ import annotations

from modelgate.core.gateway.breaker import CircuitBreaker
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["caller_error", "is_node_fault", "record_failure"]

#: failures a node is to blame for: retried elsewhere, counted by its breakers
_NODE_FAULTS = frozenset(
    {
        ErrorKind.UNAVAILABLE,
        ErrorKind.INTERNAL,
        ErrorKind.DEADLINE_EXCEEDED,
        ErrorKind.OVERLOADED,
        ErrorKind.NOT_FOUND,
    }
)
#: of those, the ones that do not mean the node is broken (it is busy, or its
#: announcement is stale): retried elsewhere without counting against its node breaker
_NOT_BROKEN = frozenset({ErrorKind.OVERLOADED, ErrorKind.NOT_FOUND})


def is_node_fault(kind: ErrorKind) -> bool:
    """Is a failure of this kind the node's to blame (so it is retried on another node)?"""
    return kind in _NODE_FAULTS


def record_failure(node: CircuitBreaker, version: CircuitBreaker, exc: ModelgateError) -> None:
    """Count a failed call against the node's breaker and its (model, version) breaker."""
    if exc.kind not in _NODE_FAULTS:
        node.success()  # it answered: reachable and working
        version.success()
        return
    if exc.details.get("refused") is True:  # refused unread: says nothing of its health
        node.release()
        version.release()
        return
    version.failure()
    timed_out = exc.details.get("timed_out") is True
    if exc.kind in _NOT_BROKEN or (
        exc.kind is ErrorKind.DEADLINE_EXCEEDED and not timed_out
    ):  # busy, stale, or it refused work whose deadline passed while queued
        node.release()
    else:
        node.failure()


def caller_error(model: str, version: int, error: ModelgateError) -> ModelgateError:
    """The node fault ``error`` as the caller sees it once no node answered: its kind, in
    words that name no node."""
    what = f"model '{model}' version {version}"
    if error.kind is ErrorKind.DEADLINE_EXCEEDED:
        if error.details.get("timed_out") is True:
            message = f"no node answered {what} in time"
        else:
            message = f"the request's deadline passed before a node could run {what}"
        return ModelgateError(error.kind, message, details=error.details)
    if error.kind is ErrorKind.OVERLOADED:
        message = f"every node that serves {what} is busy; retry later"
    elif error.kind is ErrorKind.NOT_FOUND:
        message = f"no node serves {what} now"
    elif error.kind is ErrorKind.INTERNAL:
        message = f"{what} failed on the node that ran it"
    else:
        message = f"no node could serve {what} now"
    retry_after = error.retry_after
    if retry_after is None and error.kind is ErrorKind.UNAVAILABLE:
        retry_after = 1.0
    return ModelgateError(error.kind, message, retry_after=retry_after)
