"""The listening sockets the server binds itself."""

from __future__ import annotations

import socket

from modelgate.server import _bind


def test_listening_sockets_are_tcp_so_asyncio_sets_nodelay_on_accepted_ones() -> None:
    # asyncio turns Nagle off (TCP_NODELAY) on accepted connections only when the listening
    # socket's proto is IPPROTO_TCP; with proto 0 a kept-alive connection stalls ~40 ms per
    # answer on delayed ACKs.
    sock = _bind("127.0.0.1", 0, reuse_port=False)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    finally:
        sock.close()
