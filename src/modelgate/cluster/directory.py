"""``StaticNodeDirectory``: where a gateway finds its nodes when they are listed
(``MODELGATE_NODES=host:port,...``): any OIP gRPC server, Triton and MLServer included.
An entry may name the node's region after an ``@`` (``host:port@eu-west``; see
:mod:`modelgate.core.gateway.regions`). Only the entries that ``MODELGATE_NODE_KEY_NODES``
names as modelgate nodes are sent ``MODELGATE_NODE_KEY``, here and in inference calls.
Each refresh asks every address ``ServerReady``, then what it serves
(:mod:`modelgate.cluster.oip_catalog`: its repository index, or the configured
``MODELGATE_NODE_MODELS``, and each version's ``ModelMetadata`` once). An address that
does not answer is left out until it does.

Nodes that announce themselves do so in Redis:
:class:`~modelgate.storage.redis.node_directory.RedisNodeDirectory`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.cluster.oip_catalog import MAX_MODELS, OipCatalog
from modelgate.core.gateway.nodes import NodeInfo
from modelgate.core.gateway.regions import REGION_PATTERN, valid_region

__all__ = ["StaticNodeDirectory", "keyed_nodes", "split_region"]

log = logging.getLogger("modelgate.cluster")


def split_region(entry: str) -> tuple[str, str]:
    """``host:port@region`` as (address, region); ValueError for a region that is not one."""
    address, _, region = entry.strip().partition("@")
    if region and not valid_region(region):
        raise ValueError(f"the region in node entry {entry!r} must match {REGION_PATTERN}")
    return address, region


def keyed_nodes(entries: Sequence[str], setting: str | None) -> frozenset[str]:
    """The addresses of ``entries`` that ``MODELGATE_NODE_KEY_NODES`` (``setting``) names as
    modelgate nodes, the ones sent the node key: ``*`` for all, none when unset. ValueError
    for a named address that is not listed, so a typo does not quietly leave a node without
    its key."""
    addresses = [split_region(entry)[0] for entry in entries]
    named = {a.strip() for a in (setting or "").split(",") if a.strip()}
    if named == {"*"}:
        return frozenset(addresses)
    unknown = sorted(named - set(addresses))
    if unknown:
        raise ValueError(
            f"MODELGATE_NODE_KEY_NODES names {', '.join(unknown)[:200]}, not in "
            "MODELGATE_NODES (name each as host:port, as listed there, or '*')"
        )
    return frozenset(named)


class StaticNodeDirectory:
    """A fixed list of OIP gRPC servers, asked what they serve."""

    def __init__(
        self,
        addresses: list[str],
        *,
        timeout_s: float = 1.0,
        credential: str | None,
        keyed: frozenset[str] = frozenset(),
        root_certificates: bytes | None = None,
        models: Sequence[str] | None = None,
        max_models: int = MAX_MODELS,
        read_timeout_s: float = 5.0,
    ):
        #: address -> the region its entry names ("" for none)
        self.regions = dict(split_region(entry) for entry in addresses)
        self.addresses = list(self.regions)
        self.timeout_s = timeout_s
        self._roots = root_certificates
        #: sent to the addresses in ``keyed`` only (:func:`keyed_nodes`): the others may be
        #: third-party servers, never given a key that modelgate nodes accept
        self._metadata = (("authorization", f"Bearer {credential}"),) if credential else ()
        self._keyed = keyed
        self._channels: dict[str, tuple[Any, Any]] = {}
        self._catalog = OipCatalog(models, max_models=max_models)
        #: the most one node's read may take, each refresh (its calls are sequential, each
        #: up to ``timeout_s``): the nodes are read together, so it bounds a refresh too
        self.read_timeout_s = read_timeout_s

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
        results = await asyncio.gather(*(self._node_in_time(a) for a in self.addresses))
        return [node for node in results if node is not None]

    async def _node_in_time(self, address: str) -> NodeInfo | None:
        """The node, or None when its read takes past ``read_timeout_s``: left out this
        refresh (the manifests it had time to give are kept for the next)."""
        try:
            async with asyncio.timeout(self.read_timeout_s):
                return await self._node(address)
        except TimeoutError:
            log.warning(
                "node %s was left out of this refresh: reading what it serves took over %g s",
                address,
                self.read_timeout_s,
            )
            return None

    async def _node(self, address: str) -> NodeInfo | None:
        stub = self._stub(address)
        metadata = self._metadata if address in self._keyed else ()
        call = {"timeout": self.timeout_s, "metadata": metadata}
        try:
            ready = await stub.ServerReady(service_pb2.ServerReadyRequest(), **call)
            if not ready.ready:
                return None
            served = await self._catalog.served(stub, address, call)
        except grpc.aio.AioRpcError as exc:
            log.debug("node %s did not answer: %s", address, exc.code().name)
            return None
        return NodeInfo(
            id=address,
            address=address,
            models=served.models,
            unversioned=frozenset(served.unversioned),
            region=self.regions.get(address, ""),
        )

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel, _stub in channels.values():
            await channel.close(grace=None)
