"""A client that opens a new connection for every request (as a flood of many clients does,
or one whose kept connections are all busy): the server's CPU per answer then includes the
connection's accept and close, which no refusal in the server can avoid.

``WORKERS`` loops on uvloop, each: connect, send the request, read the answer (by its
Content-Length), close. The server's CPU is its process tree's (``/proc``) over the run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.procs import Server
from bench.sysinfo import tree_cpu

__all__ = ["NewConnections", "cpu_per_answer"]

WORKERS = 16


@dataclass
class NewConnections:
    answers: int
    statuses: dict[int, int]
    cpu_s: float

    @property
    def per_answer_s(self) -> float | None:
        return self.cpu_s / self.answers if self.answers else None


async def _one_each(
    host: str, port: int, request: bytes, seconds: float
) -> tuple[int, dict[int, int]]:
    statuses: dict[int, int] = {}
    end = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < end:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                status = int(head.split(b" ", 2)[1])
                statuses[status] = statuses.get(status, 0) + 1
            finally:
                writer.close()

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return sum(statuses.values()), statuses


def cpu_per_answer(
    server: Server, host: str, request: bytes, seconds: float = 3.0
) -> NewConnections:
    """Run the new-connection-per-request load against ``server`` for ``seconds``."""
    import uvloop

    before = tree_cpu(server.pid)
    answers, statuses = uvloop.run(_one_each(host, server.http_port, request, seconds))
    return NewConnections(answers, statuses, tree_cpu(server.pid) - before)
