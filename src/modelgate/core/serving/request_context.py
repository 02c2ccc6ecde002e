"""The transport request id of the request being served, for listeners on the request path.

The REST adapter sets it to the request's ``X-Request-Id`` (the client's when sane, else a
new one; the answer carries it back) and the gRPC adapter to the call's ``x-request-id``
metadata (likewise). Each request runs in a task of its own, so one request never sees
another's id. Outside a request it is None.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["current_request_id"]

current_request_id: ContextVar[str | None] = ContextVar("modelgate_request_id", default=None)
