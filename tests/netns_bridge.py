"""A TCP bridge between network namespaces, with added latency: the "network" between two
regions that a test made as namespaces (``ip netns add``, loopback only).

``python -m tests.netns_bridge --from NS1 --to NS2 --delay-ms 20 PORT[:PORT] ...`` listens
on 127.0.0.1:PORT inside NS1 (``-``: the namespace it runs in) and connects each accepted
connection to 127.0.0.1:PORT inside NS2, delaying every chunk by ``delay-ms`` each way
(order kept; one-way latency, not a bandwidth limit). A socket belongs to the namespace it
was created in, so one single-threaded process can bridge two namespaces: it enters NS2
(``setns(2)``) just to create each outgoing socket, then goes back. Needs root (or
CAP_SYS_ADMIN) and the namespaces under /var/run/netns (what ``ip netns add`` makes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import socket
import time
from collections.abc import Iterator

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Inside network namespace ``namespace`` ("-": stay) for the block."""
    if namespace == "-":
        yield
        return
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(home)
        os.close(target)
        os.close(home)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay_s, data))
        queue.put_nowait((0.0, b""))
        await sender
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


async def _bridge(listen: int, target: int, into: str, delay_s: float) -> asyncio.Server:
    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with entered(into):
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(upstream, ("127.0.0.1", target))
        except OSError:
            upstream.close()
            writer.transport.abort()  # refused there: reset here, as a dead host would
            return
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        far_reader, far_writer = await asyncio.open_connection(sock=upstream)
        await asyncio.gather(_pipe(reader, far_writer, delay_s), _pipe(far_reader, writer, delay_s))

    return await asyncio.start_server(accepted, "127.0.0.1", listen, reuse_address=True)


async def _main(args: argparse.Namespace) -> None:
    servers = []
    with entered(args.source):
        for spec in args.ports:
            listen, _, target = spec.partition(":")
            servers.append(
                await _bridge(int(listen), int(target or listen), args.to, args.delay_ms / 1000)
            )
    print("bridging", " ".join(args.ports), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", default="-")
    parser.add_argument("--to", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("ports", nargs="+")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
