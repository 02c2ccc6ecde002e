"""Where a gateway finds its nodes: Redis (nodes announce themselves) or a static list.

**Redis**: each node writes its announcement (JSON: id, address, hardware, memory, models
with their manifests, draining) to ``{prefix}node:{id}`` with a time to live, and writes it
again every heartbeat; on a clean shutdown it first marks itself draining, then deletes the
key. A node that dies stops renewing the key and drops out within the TTL (its breaker has
usually opened long before). Gateways read every announcement each refresh (one ``SCAN``
and one ``MGET``).

**Static** (``MODELGATE_NODES=host:port,...``): any OIP gRPC server, Triton and MLServer
included. Each refresh asks every address ``ServerReady`` and ``RepositoryIndex``; a model
version's signature comes from ``ModelMetadata`` (asked once per version). An address that
does not answer is left out until it does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import orjson
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.gateway.nodes import NodeInfo, parse_node
from modelgate.core.serving.manifest import ModelManifest, parse_manifest

__all__ = ["RedisNodeDirectory", "StaticNodeDirectory", "node_key"]

log = logging.getLogger("modelgate.cluster")


def node_key(prefix: str, node_id: str) -> str:
    return f"{prefix}node:{node_id}"


class RedisNodeDirectory:
    """Announcements in Redis: written by nodes (:meth:`announce`), read by gateways."""

    def __init__(self, client: Any, *, prefix: str, ttl_s: float = 6.0):
        self.client = client
        self.prefix = prefix
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self._broken: set[bytes] = set()  # keys already logged as unreadable
        #: each key's last announcement and what it parsed to: a node re-announces the
        #: same document every heartbeat, and a gateway reads them all every refresh
        self._parsed: dict[bytes, tuple[bytes, NodeInfo]] = {}

    async def announce(self, document: dict[str, Any]) -> None:
        await self.client.set(
            node_key(self.prefix, str(document["id"])), orjson.dumps(document), px=self.ttl_ms
        )

    async def leave(self, node_id: str) -> None:
        await self.client.delete(node_key(self.prefix, node_id))

    async def nodes(self) -> list[NodeInfo]:
        keys = [key async for key in self.client.scan_iter(match=f"{self.prefix}node:*", count=200)]
        if not keys:
            return []
        found = []
        parsed: dict[bytes, tuple[bytes, NodeInfo]] = {}
        for key, value in zip(keys, await self.client.mget(keys), strict=True):
            if value is None:  # expired between SCAN and MGET
                continue
            known = self._parsed.get(key)
            if known is not None and known[0] == value:
                info = known[1]
            else:
                try:
                    info = parse_node(orjson.loads(value))
                except (ValueError, orjson.JSONDecodeError) as exc:
                    if key not in self._broken:
                        self._broken.add(key)
                        log.warning("ignoring the node announcement %r: %s", key, exc)
                    continue
            parsed[key] = (value, info)
            found.append(info)
        self._parsed = parsed
        return found

    async def close(self) -> None:
        await self.client.aclose()


class StaticNodeDirectory:
    """A fixed list of OIP gRPC servers, asked what they serve."""

    def __init__(
        self,
        addresses: list[str],
        *,
        timeout_s: float = 1.0,
        credential: str | None,
        root_certificates: bytes | None = None,
    ):
        self.addresses = addresses
        self.timeout_s = timeout_s
        self._roots = root_certificates
        self._metadata = (("authorization", f"Bearer {credential}"),) if credential else ()
        self._channels: dict[str, tuple[Any, Any]] = {}
        #: (address, model, version) -> the manifest built from its ModelMetadata
        self._manifests: dict[tuple[str, str, int], ModelManifest] = {}

    def _stub(self, address: str) -> Any:
        found = self._channels.get(address)
        if found is None:
            channel = (
                grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(self._roots))
                if self._roots is not None
                else grpc.aio.insecure_channel(address)
            )
            found = self._channels[address] = (
                channel,
                service_pb2_grpc.GRPCInferenceServiceStub(channel),
            )
        return found[1]

    async def nodes(self) -> list[NodeInfo]:
        results = await asyncio.gather(*(self._node(a) for a in self.addresses))
        return [node for node in results if node is not None]

    async def _node(self, address: str) -> NodeInfo | None:
        stub = self._stub(address)
        call = {"timeout": self.timeout_s, "metadata": self._metadata}
        try:
            ready = await stub.ServerReady(service_pb2.ServerReadyRequest(), **call)
            if not ready.ready:
                return None
            index = await stub.RepositoryIndex(
                service_pb2.RepositoryIndexRequest(ready=True), **call
            )
            models: dict[str, dict[int, ModelManifest]] = {}
            for entry in index.models:
                if (entry.state and entry.state != "READY") or not entry.version.isdigit():
                    continue
                number = int(entry.version)
                manifest = await self._manifest(stub, address, entry.name, number, call)
                if manifest is not None:
                    models.setdefault(entry.name, {})[number] = manifest
        except grpc.aio.AioRpcError as exc:
            log.debug("node %s did not answer: %s", address, exc.code().name)
            return None
        return NodeInfo(id=address, address=address, models=models)

    async def _manifest(
        self, stub: Any, address: str, name: str, version: int, call: dict[str, Any]
    ) -> ModelManifest | None:
        key = (address, name, version)
        manifest = self._manifests.get(key)
        if manifest is not None:
            return manifest
        meta = await stub.ModelMetadata(
            service_pb2.ModelMetadataRequest(name=name, version=str(version)), **call
        )

        def tensors(items: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

        try:
            manifest = parse_manifest(
                name,
                {
                    "runtime": "remote",
                    "platform": meta.platform or "remote",
                    "inputs": tensors(meta.inputs),
                    "outputs": tensors(meta.outputs),
                },
            )
        except Exception as exc:  # a signature modelgate cannot validate against
            log.warning("model %s v%d on %s is left out: %s", name, version, address, exc)
            return None
        self._manifests[key] = manifest
        return manifest

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel, _stub in channels.values():
            await channel.close(grace=None)
