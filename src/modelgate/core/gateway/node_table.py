"""A gateway's node table: what its nodes announce, and the models it may serve through them.

A node announces itself (see ``modelgate.cluster``) with a document: its id, the address of
its OIP gRPC endpoint, its hardware class and memory, and the models and versions it serves
with their manifests (:mod:`modelgate.core.gateway.nodes`). :class:`NodeTable` keeps the
latest table of those documents (refreshed from a
:class:`~modelgate.core.gateway.ports.NodeDirectory`: Redis, or a static list of addresses),
and from it the catalog of models, versions and manifests the gateway may load (a sharded
model's stages route calls but are no models of their own), the reference profiles whose
anomaly checks the gateway runs itself, and, at each refresh, the models whose versions,
manifests or profiles changed. :class:`~modelgate.core.gateway.cluster.Cluster` holds the
table and sends the nodes work by it.

**Models served recently**: a model no live node announces (its pool scaled to zero) is
still in the catalog when the gateway knows it, or such a version of a model other nodes
serve, from the cluster's catalogue of models served recently
(:class:`~modelgate.core.gateway.ports.ServedModels`, read at the first refresh and then
every :data:`SERVED_READ_S`; in between, what live nodes announce joins the last catalogue
read, as their announcements joined the catalogue), even when no node has announced it
since the gateway started: its requests wait for a node
(:mod:`modelgate.core.gateway.cold_start`). A model in neither is unknown (404).

Nothing here knows Redis: it is behind the two ports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from modelgate.core.gateway.nodes import NodeInfo
from modelgate.core.gateway.ports import NodeDirectory, ServedModels
from modelgate.core.serving.manifest import ModelManifest

__all__ = ["SERVED_READ_S", "NodeTable"]

log = logging.getLogger("modelgate.cluster")

#: a gateway reads the catalogue of models served recently this often (and at its first
#: refresh): it only matters for models no live node announces, and its models live a day
SERVED_READ_S = 30.0


class NodeTable:
    """The nodes of one gateway as they announced themselves, and the catalog they make."""

    def __init__(
        self,
        directory: NodeDirectory,
        *,
        served: ServedModels | None = None,
        served_read_s: float = SERVED_READ_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.directory = directory
        #: the catalogue of models served recently (None: only live nodes' models are known)
        self.served = served
        #: its last answer, with what live nodes announced since: kept while it does not
        #: answer, replaced at the next read
        self._served: dict[str, dict[int, ModelManifest]] = {}
        self._served_failing = False
        #: it is read every ``served_read_s`` (on ``clock``), from its first answer on
        self.served_read_s = served_read_s
        self._served_at: float | None = None
        self._clock = clock
        #: node id -> its announcement, as of the last refresh (in the directory's order)
        self.nodes: dict[str, NodeInfo] = {}
        #: models and their manifests as of the last refresh: what the gateway may load
        self.catalog: dict[str, dict[int, ModelManifest]] = {}
        #: model -> version -> what its anomaly check reads of its reference profile, for
        #: the versions every node serving them announces the same one of: the gateway
        #: checks their requests itself (core/monitoring/anomaly_profiles.py)
        self.profiles: dict[str, dict[int, Mapping[str, Any]]] = {}
        self.refreshed = False

    async def refresh(self) -> set[str]:
        """Read the directory and replace the table; returns the models whose versions or
        manifests changed (their routing handles must be rebuilt). Raises what the
        directory raised (the previous table stays). Versions of the catalogue of models
        served recently that no live node announces join the catalog with the manifests
        last announced (their requests wait for a node)."""
        found = await self.directory.nodes()
        if self.served is not None:
            await self._read_served()
        nodes = {info.id: info for info in found}
        catalog: dict[str, dict[int, ModelManifest]] = {}
        announced: dict[tuple[str, int], Mapping[str, Any] | None] = {}
        for info in sorted(nodes.values(), key=lambda i: i.id):
            for name, versions in info.models.items():
                known = catalog.setdefault(name, {})
                profiles = info.profiles.get(name, {})
                for number, manifest in versions.items():
                    known.setdefault(number, manifest)
                    profile = profiles.get(number)
                    key = (name, number)
                    # one node without it (an older one) or with another: the nodes check
                    if key not in announced:
                        announced[key] = profile
                    elif announced[key] != profile:
                        announced[key] = None
        if self.served is not None:
            self._remember(catalog)
            for name, versions in self._served.items():
                known = catalog.setdefault(name, {})
                for number, manifest in versions.items():
                    known.setdefault(number, manifest)  # its pool is at zero: no node now
        profiles_now: dict[str, dict[int, Mapping[str, Any]]] = {}
        for (name, number), profile in announced.items():
            if profile is not None:
                profiles_now.setdefault(name, {})[number] = profile
        changed = {
            name
            for name in set(catalog) | set(self.catalog)
            if catalog.get(name) != self.catalog.get(name)
            or profiles_now.get(name) != self.profiles.get(name)
        }
        self.nodes = nodes
        self.catalog = catalog
        self.profiles = profiles_now
        self.refreshed = True
        return changed

    async def _read_served(self) -> None:
        """The catalogue of models served recently, when ``served_read_s`` passed since it
        last answered; on failure the last one stays (logged once until it answers again),
        and the next refresh asks again."""
        assert self.served is not None
        now = self._clock()
        if self._served_at is not None and now - self._served_at < self.served_read_s:
            return
        try:
            found = await self.served.served()
        except Exception as exc:
            if not self._served_failing:
                log.warning("the catalogue of models served recently did not answer: %r", exc)
            self._served_failing = True
            return
        self._served = {name: dict(versions) for name, versions in found.items()}
        self._served_at = now
        self._served_failing = False

    def _remember(self, live: Mapping[str, Mapping[int, ModelManifest]]) -> None:
        """Add what live nodes announce to the last catalogue read: their announcements
        wrote it to the catalogue, and a model announced since the last read whose pool
        went to zero before the next one stays known (the read replaces it all)."""
        served = self._served
        for name, versions in live.items():
            known = served.get(name)
            if known is None:
                served[name] = dict(versions)
            else:
                known.update(versions)

    async def close(self) -> None:
        await self.directory.close()
