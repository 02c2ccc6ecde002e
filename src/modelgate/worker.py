"""The job worker process: ``run_worker()`` -> :class:`WorkerProcess` with ``startup`` /
``main_loop`` / ``shutdown``, like the server, without ports.

It builds the same core components as a server, without the protocol adapters
(:func:`~modelgate.boot.components.build_core_components`), so it loads models like a node and
runs each job's inferences through the same :class:`InferenceService` (authorization,
admission, limits, quotas, metering), then claims jobs from the database until SIGTERM or
SIGINT. On a clean stop the jobs it runs go back to the queue at once; a killed worker's
jobs wait for their lease to expire (``MODELGATE_JOBS_LEASE_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from modelgate.boot.components import Components, build_core_components
from modelgate.observability.logs import configure_logging
from modelgate.settings import Settings

__all__ = ["WorkerProcess", "run_worker"]

log = logging.getLogger("modelgate.worker")


class WorkerProcess:
    def __init__(self, settings: Settings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.components: Components | None = None
        self._stop = asyncio.Event()

    async def serve(self) -> None:
        await self.startup()
        try:
            await self.main_loop()
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        self.components = components = build_core_components(self.settings)
        assert components.jobs is not None
        # a worker loads what its jobs ask for; loading ahead of interactive traffic is
        # the servers' business (the usage-history eviction ranking stays)
        components.preloader = None
        if self.worker_id:
            components.jobs.worker.worker_id = self.worker_id
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not main thread
                loop.add_signal_handler(signum, self._stop.set)
        await components.open()
        await components.start()
        components.jobs.start_worker()
        log.info("modelgate worker %s ready", components.jobs.worker.worker_id)

    async def main_loop(self) -> None:
        await self._stop.wait()

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        if self.components is not None:
            await self.components.close()


def run_worker(settings: Settings, worker_id: str | None = None) -> None:
    """Run jobs in the foreground until SIGINT or SIGTERM."""
    writer = configure_logging(settings.log_level, settings.log_format)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(WorkerProcess(settings, worker_id).serve())
    finally:
        writer.stop()
