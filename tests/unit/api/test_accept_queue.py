"""The HTTP listener's accept queue as the kernel reports it (TCP_INFO of a listening
socket): connections whose handshake is done and that the server has not accepted yet,
and the queue's bound. Real sockets."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from modelgate.api.rest.socket_state import accept_queue

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO is Linux's")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(32)
        yield sock


def test_it_counts_the_connections_not_yet_accepted(listener: socket.socket) -> None:
    assert accept_queue(listener) == (0, 32)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(5)]
    try:
        assert accept_queue(listener) == (5, 32)
        accepted, _ = listener.accept()
        accepted.close()
        assert accept_queue(listener) == (4, 32)
    finally:
        for client in clients:
            client.close()


def test_a_socket_that_is_not_listening_is_unknown(listener: socket.socket) -> None:
    with socket.create_connection(listener.getsockname()) as client:
        assert accept_queue(client) is None  # connected, not listening
    with socket.socket() as fresh:
        assert accept_queue(fresh) is None  # never listened
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert accept_queue(udp) is None
    closed = socket.socket()
    closed.close()
    assert accept_queue(closed) is None
