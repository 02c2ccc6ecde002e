"""One write per answer. uvicorn writes an answer's status line and headers with one
``transport.write`` and its body with another: two system calls and, with ``TCP_NODELAY``,
two segments, so a client waiting for a small answer is woken for the head, finds no body,
and is woken again for it. At concurrency 1 that is a second wake-up of the client and a
second send per request on the critical path (measured in the report of issue 11).

:class:`HeadHoldingTransport` is the transport a request's cycle writes through
(api/rest/http_protocol.py hands it to each cycle): a head that announces a
``Content-Length`` is held until the cycle's next write, the body's, and both go out in one
``writelines`` (one ``writev`` under uvloop, no copy of the body). A chunked head (a
streamed answer of unknown length), the interim ``100 Continue`` and every write after the
head go out at once, as before. Closing sends a head still held first, so an answer cut
short reaches the client as it did: a head and then the close.
"""

from __future__ import annotations

import asyncio

__all__ = ["HeadHoldingTransport"]

#: how uvicorn starts a head (``STATUS_LINE``): an interim ``100 Continue`` never waits
_FINAL_HEAD = b"HTTP/1.1 "
_CONTINUE = b"HTTP/1.1 1"
#: uvicorn writes header names lower-cased, one per line
_LENGTH = b"\r\ncontent-length: "


class HeadHoldingTransport:
    """The writes of one request cycle: only its first head is held, never a body that
    happens to look like one."""

    __slots__ = ("_head", "_started", "transport")

    def __init__(self, transport: asyncio.Transport):
        self.transport = transport
        self._head: bytes | None = None
        self._started = False  # the final head was written (or held): the rest is body

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self.transport.writelines((head, data))
            return
        if (
            not self._started
            and isinstance(data, bytes)
            and data.startswith(_FINAL_HEAD)
            and not data.startswith(_CONTINUE)
        ):
            self._started = True
            if _LENGTH in data:
                self._head = data  # its body follows in the same step of the request's task
                return
        self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def flush(self) -> None:
        """Send a held head now (the cycle ended without its body)."""
        head = self._head
        if head is not None:
            self._head = None
            self.transport.write(head)
