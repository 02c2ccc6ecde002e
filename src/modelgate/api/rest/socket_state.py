"""What the kernel knows that asyncio does not tell: when data last arrived on a
connection, whether its peer has closed it, and how many connections wait in a listening
socket's accept queue. Each answer is one system call on the descriptor; each answers
"unknown" (None, False) rather than raise.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

__all__ = ["accept_queue", "last_received_at", "peer_closed"]

#: struct tcp_info (linux/tcp.h): 8 one-byte fields, then u32s, ``tcpi_last_data_recv``
#: the 12th of them
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_LAST_DATA_RECV = struct.Struct("I")
_LAST_DATA_RECV_AT = 8 + 11 * 4
_TCP_INFO_SIZE = _LAST_DATA_RECV_AT + 4
#: a listening socket's TCP_INFO: ``tcpi_unacked`` (the 5th u32) is its accept queue's
#: length, ``tcpi_sacked`` (the 6th) the queue's bound, the listen backlog
_ACCEPT_QUEUE = struct.Struct("II")
_ACCEPT_QUEUE_AT = 8 + 4 * 4
#: ``tcpi_state`` of a listening socket (linux/tcp_states.h: TCP_LISTEN)
_LISTEN = 10


def last_received_at(transport_socket: Any) -> float | None:
    """The ``time.monotonic()`` instant the kernel last received data on this socket
    (TCP_INFO's ``tcpi_last_data_recv``, in milliseconds of the kernel's clock tick), None
    where unknown (not TCP, not Linux)."""
    info = _tcp_info(transport_socket, _TCP_INFO_SIZE)
    if info is None:
        return None
    ago_ms: int = _LAST_DATA_RECV.unpack_from(info, _LAST_DATA_RECV_AT)[0]
    return time.monotonic() - ago_ms / 1000


def peer_closed(transport_socket: Any) -> bool:
    """Whether the peer has closed the connection (one ``recv(MSG_PEEK)``): True for a FIN
    or a reset, False while it is there or nothing can be told."""
    # asyncio's socket wrapper offers no recv: a socket object on the same descriptor,
    # detached again so that it never closes it
    sock = socket.socket(fileno=transport_socket.fileno())
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read: the client is still there
    except OSError:
        return True  # reset
    finally:
        sock.detach()


def accept_queue(listener: Any) -> tuple[int, int] | None:
    """How many connections wait in ``listener``'s accept queue (their handshake done by
    the kernel, not yet accepted by the server), and the most it holds (the listen
    backlog; past it new connections are dropped and their clients retry their SYN a
    second or more later); None where unknown (not a listening TCP socket, not Linux)."""
    info = _tcp_info(listener, _ACCEPT_QUEUE_AT + _ACCEPT_QUEUE.size)
    if info is None or info[0] != _LISTEN:
        return None
    waiting, bound = _ACCEPT_QUEUE.unpack_from(info, _ACCEPT_QUEUE_AT)
    return waiting, bound


def _tcp_info(sock: Any, size: int) -> bytes | None:
    """The first ``size`` bytes of ``sock``'s ``struct tcp_info`` (one ``getsockopt``), None
    where the kernel gives fewer or none (not TCP, not Linux, closed)."""
    if _TCP_INFO is None:
        return None
    try:
        info: bytes = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, size)
    except OSError:
        return None
    return info if len(info) >= size else None
