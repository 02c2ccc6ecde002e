"""A running server exports its HTTP listener's accept queue (docs/operations.md, "A
saturated server"): connections the kernel completed and the server has not accepted yet.
They are made while the server's loop is held (this test runs on it and does not yield), so
they wait exactly as they would behind a saturated loop; once it runs again it accepts them."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelgate.server import Server
from tests.api.conftest import running_server

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO is Linux's"),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running_server(Path(tmp_path_factory.mktemp("accept"))) as running:
        yield running


def gauges(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("modelgate_http_accept_queue")
    }


async def test_connections_waiting_behind_a_held_loop_are_counted(server: Server) -> None:
    assert server.components is not None
    registry = server.components.metrics.registry
    clients = [socket.create_connection(("127.0.0.1", server.http_port)) for _ in range(3)]
    try:
        held = gauges(generate_latest(registry).decode())  # no await since: nothing accepted
        assert held == {
            "modelgate_http_accept_queue_connections": 3,
            "modelgate_http_accept_queue_limit_connections": 2048,
        }
        await asyncio.sleep(0.2)  # the loop runs: it accepts them
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            scraped = gauges((await http.get("/metrics")).text)
        assert scraped["modelgate_http_accept_queue_connections"] == 0
    finally:
        for client in clients:
            client.close()
