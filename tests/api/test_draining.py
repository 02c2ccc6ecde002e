"""With ``MODELGATE_SHED_ACCEPT_QUEUE`` on, a new connection's first request reports its wait
in the listener's accept queue to the controller (issue 15), with how many connections
queue there, and is answered 503 by the HTTP protocol itself when the controller is
draining (off, the controller is not asked); the connection stays usable, and
its next requests are not asked again. The controller's answer is set by the test (this
loaded machine's accept queue decides nothing); the rule is tested in
tests/unit/admission/test_accept_queue_draining.py."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr

from modelgate.server import Server
from tests.api.conftest import running_server
from tests.api.test_early_shedding import ADMIN, answer, raw_request, sample
from tests.api.test_queue_shedding import _controller

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(
        Path(tmp_path_factory.mktemp("draining")),
        auth="required",
        admin_key=SecretStr(ADMIN),
        shed_queue_target_ms=300,
        shed_accept_queue=True,
    ) as running:
        yield running


def drain(monkeypatch: pytest.MonkeyPatch, server: Server) -> list[tuple[float, int | None]]:
    """The controller drains (every new connection's first inference request is refused)
    until the test ends; returns what it is asked: each (wait, queue length)."""
    asked: list[tuple[float, int | None]] = []

    def draining(waited_s: float, queued: int | None = None) -> bool:
        asked.append((waited_s, queued))
        return True

    monkeypatch.setattr(_controller(server), "connected", draining)
    return asked


async def first_answer(port: int, request: bytes) -> int:
    """The status of ``request`` sent on a new connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return (await answer(reader))[0]
    finally:
        writer.close()


async def test_a_new_connections_first_request_is_refused_while_draining(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = drain(monkeypatch, server)
    shed_total = ("modelgate_queue_shed_requests_total", {"priority": "none"})
    before = sample(server, *shed_total)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        writer.write(raw_request())
        status, headers, body = await answer(reader)
        assert status == 503 and headers["retry-after"] == "1"
        assert b"overloaded" in body and "connection" not in headers
        writer.write(raw_request())  # the same connection: not a new one, not asked
        status, _, _ = await answer(reader)
        assert status == 200
    finally:
        writer.close()
    assert len(asked) == 1
    waited, queued = asked[0]
    assert 0 <= waited < 5
    if sys.platform == "linux":  # the listener's accept queue, as the kernel says
        assert queued is not None and queued >= 0
    assert sample(server, *shed_total) == before + 1


async def test_a_first_request_that_is_not_inference_is_reported_but_served(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = drain(monkeypatch, server)
    ready = b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n"
    assert await first_answer(server.http_port, ready) == 200
    assert len(asked) == 1


async def test_off_by_default_the_controller_is_not_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(tmp_path, shed_queue_target_ms=300) as plain:
        asked = drain(monkeypatch, plain)
        unauthenticated = raw_request().replace(f"Bearer {ADMIN}".encode(), b"Bearer x")
        status = await first_answer(plain.http_port, unauthenticated)
    assert status == 200  # authentication is off here: served
    assert asked == []
