"""``StaticNodeDirectory``: where a gateway finds its nodes when they are listed
(``MODELGATE_NODES=host:port,...``): any OIP gRPC server, Triton and MLServer included.
An entry may name the node's region after an ``@`` (``host:port@eu-west``; see
:mod:`modelgate.core.gateway.regions`).
Each refresh asks every address ``ServerReady`` and ``RepositoryIndex``; a model version's
signature comes from ``ModelMetadata`` (asked once per version). An address that does not
answer is left out until it does.

Nodes that announce themselves do so in Redis:
:class:`~modelgate.storage.redis.node_directory.RedisNodeDirectory`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.gateway.nodes import NodeInfo
from modelgate.core.gateway.regions import REGION_PATTERN, valid_region
from modelgate.core.serving.manifest import ModelManifest, parse_manifest

__all__ = ["StaticNodeDirectory", "split_region"]

log = logging.getLogger("modelgate.cluster")


def split_region(entry: str) -> tuple[str, str]:
    """``host:port@region`` as (address, region); ValueError for a region that is not one."""
    address, _, region = entry.strip().partition("@")
    if region and not valid_region(region):
        raise ValueError(f"the region in node entry {entry!r} must match {REGION_PATTERN}")
    return address, region


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
        #: address -> the region its entry names ("" for none)
        self.regions = dict(split_region(entry) for entry in addresses)
        self.addresses = list(self.regions)
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
        return NodeInfo(
            id=address, address=address, models=models, region=self.regions.get(address, "")
        )

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
