"""A TCP proxy for fault tests: put it between modelgate and a service (Redis, PostgreSQL)
and switch what the network does, while the service itself stays up.

Modes: ``pass`` forwards bytes both ways; ``refuse`` resets every open connection and
refuses new ones (the service is down); ``blackhole`` keeps connections open and accepts
new ones but delivers nothing either way (a network partition: packets are silently
dropped and only timeouts notice). As with TCP, whose retransmissions deliver what was
sent once the path heals, bytes held in a blackhole arrive in order when the mode goes
back to ``pass``; a stream never arrives with a hole in it.
It runs its own event loop in a thread, so blocking test code can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Literal

Mode = Literal["pass", "refuse", "blackhole"]


class FaultProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self._changed = asyncio.Event()  # set, and replaced, at every mode change
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.setblocking(False)
        self.port: int = listener.getsockname()[1]
        self._listener = listener
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(5)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._client, sock=self._listener)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            _reset(writer)
            return
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._writers.add(upstream_writer)
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                while self.mode == "blackhole":  # hold the bytes (and stop reading)
                    await self._changed.wait()
                if self.mode != "pass":
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def set(self, mode: Mode) -> None:
        """Switch mode; ``refuse`` also resets every connection open now."""

        def apply() -> None:
            self.mode = mode
            self._changed.set()
            self._changed = asyncio.Event()
            if mode == "refuse":
                for writer in list(self._writers):
                    _reset(writer)
                self._writers.clear()

        self._loop.call_soon_threadsafe(apply)

    def close(self) -> None:
        def stop() -> None:
            self._server.close()
            for writer in list(self._writers):
                _reset(writer)
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)
        self._loop.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer would."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()
