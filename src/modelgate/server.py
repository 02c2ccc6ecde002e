"""The server process: ``run()`` -> :class:`Server` with ``startup`` / ``main_loop`` /
``shutdown``, REST (uvicorn) and gRPC (grpc.aio) on one event loop around one core.

``--workers N`` starts N such processes. Each binds its own listening socket with
``SO_REUSEPORT``, so the kernel spreads connections across workers by their addresses;
with one shared socket (plain ``uvicorn --workers``) one busy worker can take every
connection of a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn

from modelgate.api.rest.early_refusals import EarlyRefusals
from modelgate.api.rest.http_protocol import limited_protocol
from modelgate.api.rest.socket_state import accept_queue
from modelgate.boot.components import Components
from modelgate.boot.serving import build_components, build_grpc_server
from modelgate.observability.logs import configure_logging
from modelgate.settings import Settings

__all__ = ["Server", "run"]

log = logging.getLogger("modelgate.server")


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: :class:`Server` owns SIGINT and SIGTERM, stops
    REST and gRPC together, and exits 0 after a clean drain (uvicorn re-raises the signal).

    Nor does its main loop wake ten times a second to look at ``should_exit`` (an idle
    server's most frequent wake-up, about 0.06% of a core): it waits for ``should_exit`` to
    be set. Each tick would only refresh the default headers, which are fixed here (no
    ``Date``, no ``Server``), and count towards a request limit there is none of; with
    either configured, uvicorn's own loop runs."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit = asyncio.Event()
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        # set on the event loop's thread only: by Server's signal handlers and tasks
        if value:
            self._exit.set()
        else:
            self._exit.clear()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        config = self.config
        if (
            config.date_header
            or config.limit_max_requests is not None
            or config.callback_notify is not None
        ):
            await super().main_loop()  # a tick has work to do
            return
        if not await self.on_tick(0):  # the default headers, set once
            await self._exit.wait()


class Server:
    def __init__(
        self,
        settings: Settings,
        http_socket: socket.socket | None = None,
        *,
        reuse_port: bool = False,
    ):
        self.settings = settings
        self._http_socket = http_socket
        self._reuse_port = reuse_port
        self.components: Components | None = None
        self._grpc: Any = None
        self._uvicorn: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping: asyncio.Task[None] | None = None
        self.started = asyncio.Event()

    async def serve(self) -> None:
        await self.startup()
        try:
            await self.main_loop()
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        settings = self.settings
        self.components = components = build_components(settings)
        await components.open()
        self._grpc = build_grpc_server(settings, components, reuse_port=self._reuse_port)
        address = f"{settings.host}:{settings.grpc_port}"
        if settings.tls_certfile and settings.tls_keyfile:
            import grpc  # grpc only when serving

            credentials = grpc.ssl_server_credentials(
                [(settings.tls_keyfile.read_bytes(), settings.tls_certfile.read_bytes())]
            )
            self.grpc_port = self._grpc.add_secure_port(address, credentials)
        else:
            self.grpc_port = self._grpc.add_insecure_port(address)
        await self._grpc.start()
        if components.announcer is not None and settings.node_address is None:
            components.announcer.use_port(self.grpc_port)
        assert components.rest_app is not None
        overload = getattr(components.service.admission, "overload", None)
        shed_answers = None if overload is None else components.metrics.http_answers("oip", 503)
        memo = getattr(components.service.admission, "memo", None)
        refusals = None
        if memo is not None and components.authenticator is not None:
            refusals = EarlyRefusals(  # the app's parts, so that it counts as the app would
                memo,
                answers=components.metrics.http_answers("oip", 429),
                backpressure=components.backpressure,
                abuse=components.abuse,
                overload=overload,
                requests=components.requests,
            )
        sock = self._http_socket or _bind(settings.host, settings.http_port, reuse_port=False)
        self.http_port = sock.getsockname()[1]
        # connections waiting before any request of theirs is read (docs/operations.md)
        listener_queue = functools.partial(accept_queue, sock)
        components.metrics.track_accept_queue(listener_queue)
        config = uvicorn.Config(
            components.rest_app,
            host=settings.host,
            port=settings.http_port,
            lifespan="off",
            access_log=False,  # modelgate's request log has the line (observability/logs.py)
            log_config=None,  # uvicorn's records go to the root logger, in its format
            log_level=settings.log_level,
            # httptools, with the header size, header time and connection limits it lacks
            http=limited_protocol(
                max_header_bytes=settings.http_max_header_bytes,
                header_timeout_s=settings.http_header_timeout_seconds,
                body_timeout_s=settings.http_body_timeout_seconds,
                max_connections=settings.http_max_connections,
                # issue 15: inference requests shed before the app runs, with shedding on
                overload=overload,
                shed_answers=shed_answers,  # counted with the app's answers
                refusals=refusals,  # a known caller's memo refusals before the app runs
                # with shedding on: drain while the accept queue stands (off by default)
                accept_queue_drains=settings.shed_accept_queue,
                listener_queue=listener_queue,
            ),
            timeout_keep_alive=settings.http_keepalive_seconds,
            server_header=False,
            date_header=False,
            # X-Forwarded-For only from the peers named; none by default (any local process
            # could otherwise pick the address that abuse throttling counts)
            proxy_headers=bool(settings.forwarded_allow_ips.strip()),
            forwarded_allow_ips=settings.forwarded_allow_ips,
            ssl_certfile=str(settings.tls_certfile) if settings.tls_certfile else None,
            ssl_keyfile=str(settings.tls_keyfile) if settings.tls_keyfile else None,
        )
        self._uvicorn = _UvicornServer(config)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not main thread
                loop.add_signal_handler(signum, self.request_stop)
        self._tasks.append(asyncio.create_task(self._uvicorn.serve(sockets=[sock])))
        # Live at once, ready once the preload models are warm.
        await components.start()
        if settings.jobs_worker and components.jobs is not None:  # `make run`: jobs just work
            components.jobs.start_worker()
        # Everything allocated so far (modules, models, sessions) lives as long as the
        # process: keep it out of the collector's way, or each full collection walks it all
        # and stalls the loop for tens of milliseconds (measured: p99 44 ms -> 11 ms at c=64).
        gc.collect()
        gc.freeze()
        if settings.idle_unload_seconds or settings.memory_budget_mb:
            self._tasks.append(asyncio.create_task(self._evict_periodically()))
        log.info(
            "modelgate ready: REST %s://%s:%d  gRPC %s:%d%s",
            "https" if settings.tls_certfile else "http",
            settings.host,
            self.http_port,
            settings.host,
            self.grpc_port,
            " (TLS)" if settings.tls_certfile else "",
        )
        if settings.auth == "required":
            log.info(
                "access control is on: send 'Authorization: Bearer <key>'. Make a key with: "
                "modelgate plans create basic --rps 100 && modelgate tenants create acme "
                "--plan basic && modelgate keys create --tenant <tenant id> --scope infer "
                "--scope models:read%s",
                "" if settings.admin_key else " (or set MODELGATE_ADMIN_KEY, a bootstrap key)",
            )
        self.started.set()

    async def main_loop(self) -> None:
        await self._tasks[0]  # uvicorn returns when SIGINT/SIGTERM asked it to stop

    def request_stop(self) -> None:
        """SIGTERM or SIGINT: turn not ready at once, leave the node directory, wait
        ``shutdown_delay_seconds`` for balancers to notice, then stop accepting and let the
        requests in flight finish. A second signal stops at once."""
        if self._uvicorn is None:
            return
        if self._stopping is not None or self.components is None:
            self._uvicorn.should_exit = True
            return
        self._stopping = asyncio.get_running_loop().create_task(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        components = self.components
        assert components is not None
        assert self._uvicorn is not None
        if components.jobs is not None:  # first: a spot node's notice may be short
            self._tasks.append(asyncio.create_task(components.jobs.hand_back()))
        components.registry.drain()
        log.info(
            "shutting down: not ready; stopping in %.1f s", self.settings.shutdown_delay_seconds
        )
        try:
            if components.announcer is not None:
                await components.announcer.leave()
            await asyncio.sleep(self.settings.shutdown_delay_seconds)
        finally:
            if components.backpressure is not None:  # held refusals answer now, not later
                components.backpressure.release()
            self._uvicorn.should_exit = True

    async def shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        for task in self._tasks[1:]:
            task.cancel()
        if self._stopping is not None and not self._stopping.done():
            self._stopping.cancel()
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        if self.components is not None:
            await self.components.close()

    async def _evict_periodically(self) -> None:
        assert self.components is not None
        while True:
            await asyncio.sleep(5)
            await self.components.registry.evict()


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket says it is TCP (proto 0 would leave Nagle on: ~40 ms stalls
    # on kept-alive connections under the default event loop)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _event_loop_run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional; the standard loop works, slower
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _serve_one(values: dict[str, Any], reuse_port: bool) -> None:
    settings = Settings(**values)  # a plain dict crosses the process boundary
    writer = configure_logging(settings.log_level, settings.log_format)
    try:
        sock = _bind(settings.host, settings.http_port, reuse_port=reuse_port)
        with contextlib.suppress(KeyboardInterrupt):
            _event_loop_run(Server(settings, sock, reuse_port=reuse_port).serve())
    finally:
        writer.stop()  # writes the records still queued


def run(settings: Settings) -> None:
    """Serve in the foreground until SIGINT or SIGTERM."""
    if settings.workers == 1:
        _serve_one(settings.model_dump(), reuse_port=False)
        return
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_serve_one, args=(settings.model_dump(), True))
        for _ in range(settings.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: Any) -> None:
        for worker in workers:
            if worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    sys.exit(max((w.exitcode or 0) for w in workers))
