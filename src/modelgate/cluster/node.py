"""A node's side of discovery: announce what it serves, heartbeat, leave cleanly.

The announcement lists every model in the node's repository with each version's effective
manifest (a node loads on first use, like the all-in-one server), its hardware class and
memory, its region and capacity class (``MODELGATE_REGION``, ``MODELGATE_CAPACITY_CLASS``);
for a version whose manifest has an ``anomaly`` section, also the statistics of its reference
profile that the check reads (``profiles``; old gateways ignore them), so that a
gateway checks each request itself (:mod:`modelgate.core.monitoring.anomaly_profiles`). It
is written when the node is ready, then every ``interval_s``; the key's TTL is a few
intervals, so a node that dies drops out on its own. On shutdown the node announces itself
draining (gateways stop choosing it at their next refresh), waits ``drain_s`` for the
gateways to notice, then deletes its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from modelgate.cluster.stages import StagedRepository
from modelgate.core.monitoring.anomaly_profiles import screen_profile
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.profiles import read_reference
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.serving.stages import parse_stage_model_name
from modelgate.errors import ModelgateError
from modelgate.storage.redis.node_directory import RedisNodeDirectory

__all__ = ["NodeAnnouncer", "detect_hardware", "total_memory_bytes"]

log = logging.getLogger("modelgate.cluster")


def detect_hardware() -> str:
    """``gpu`` when ONNX Runtime offers a CUDA or TensorRT execution provider, else ``cpu``."""
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return "cpu"
    providers = onnxruntime.get_available_providers()
    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    return "gpu" if gpu.intersection(providers) else "cpu"


def total_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on Linux
        return 0


def _anomaly_profile(source: VersionSource) -> dict[str, Any] | None:
    """What the anomaly check of a version with an ``anomaly`` section reads of its
    reference profile, for the gateways to check each request before they merge requests
    into one call (None: no check, or no profile to announce; the node checks then)."""
    if source.manifest.anomaly is None:
        return None
    try:
        document = read_reference(source)
        return screen_profile(document, source.manifest) if document is not None else None
    except ModelgateError as exc:  # refused or unreadable: names no host path
        log.debug("not announcing an anomaly profile: %s", exc.message)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.debug("not announcing the anomaly profile of %s: %r", source.manifest.name, exc)
    return None


class NodeAnnouncer:
    def __init__(
        self,
        directory: RedisNodeDirectory,
        registry: ModelRegistry,
        *,
        node_id: str,
        address: str,
        hardware: str,
        memory_bytes: int,
        interval_s: float = 2.0,
        drain_s: float = 1.0,
        region: str | None = None,
        capacity: str = "on-demand",
    ):
        self.directory = directory
        self.registry = registry
        self.node_id = node_id
        self.address = address
        self.hardware = hardware
        self.memory_bytes = memory_bytes
        self.interval_s = interval_s
        self.drain_s = drain_s
        self.region = region
        self.capacity = capacity
        self.draining = False
        self._task: asyncio.Task[None] | None = None

    def use_port(self, port: int) -> None:
        """The gRPC port the server really bound (``--grpc-port 0`` picks one)."""
        host = self.address.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"

    def document(self) -> dict[str, Any]:
        """The announcement (reads manifests from the repository: call it in a thread)."""
        repository = self.registry.repository
        staged = repository if isinstance(repository, StagedRepository) else None
        models: dict[str, Any] = {}
        for name in repository.names():
            if staged is not None and parse_stage_model_name(name) is not None:
                continue  # announced under "stages", not as a model clients see
            try:
                sources = repository.versions(name)
            except ModelgateError as exc:
                log.debug("not announcing model %s: %s", name, exc.message)
                continue
            models[name] = {
                "versions": {
                    str(s.version): s.manifest.model_dump(mode="json", exclude={"name"})
                    for s in sources
                },
                "loaded": [v.version for v in self.registry.versions(name)],
            }
            profiles = {str(s.version): p for s in sources if (p := _anomaly_profile(s))}
            if profiles:
                models[name]["profiles"] = profiles
        document = {
            "id": self.node_id,
            "address": self.address,
            "hardware": self.hardware,
            "memory_bytes": self.memory_bytes,
            "capacity": self.capacity,
            **({"region": self.region} if self.region else {}),
            "draining": self.draining,
            "models": models,
        }
        if staged is not None:
            document.update(staged.announcement())  # the stages of sharded models it holds
        return document

    async def announce(self) -> None:
        document = await asyncio.to_thread(self.document)
        await self.directory.announce(document)

    async def start(self) -> None:
        """Announce now (logged, not raised, when Redis is down: the heartbeat retries)."""
        await self._announce_logged()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())

    async def _announce_logged(self) -> None:
        try:
            await self.announce()
        except Exception as exc:  # Redis down or slow: the next heartbeat tries again
            log.warning("node %s could not announce itself: %r", self.node_id, exc)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._announce_logged()

    async def leave(self) -> None:
        """Announce draining, give gateways ``drain_s`` to notice, then remove the entry
        (once: a second call returns at once)."""
        if self.draining:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.draining = True
        await self._announce_logged()
        await asyncio.sleep(self.drain_s)
        try:
            await self.directory.leave(self.node_id)
        except Exception as exc:
            log.warning("node %s could not remove its entry: %r", self.node_id, exc)
