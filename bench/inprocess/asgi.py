"""Calling the REST app in-process: a POST with its JSON answer, and a prebuilt request to call
again and again.
"""

from __future__ import annotations

import json
from typing import Any

from bench.inprocess.timing import Call
from bench.workloads import AUTHORIZATION


async def asgi_post(app: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to ``app`` in-process with the bootstrap key; the JSON answer."""
    data = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"authorization", AUTHORIZATION.encode()),
        ],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if status >= 300:
        raise RuntimeError(f"POST {path}: {status} {answer[:500]!r}")
    result: dict[str, Any] = json.loads(answer)
    return result


def post_scope(path: str, body: bytes, authorization: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", authorization.encode()),
        ],
    }


class Counted:
    """A ``receive`` that hands over ``body`` whole and a ``send`` that counts the answers'
    statuses (``statuses``), for a request called again and again."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.statuses: dict[int, int] = {}

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            self.statuses[status] = self.statuses.get(status, 0) + 1


def rest_call(app: Any, scope: dict[str, Any], body: bytes) -> Call:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(_message: Any) -> None:
        return None

    return lambda: app(scope, receive, send)
