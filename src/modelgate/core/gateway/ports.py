"""The ports of the gateway, as Protocols: where nodes are found (:class:`NodeDirectory`), how
one inference is sent to a node (:class:`NodeClient`), which models the cluster served
recently (:class:`ServedModels`), the cluster's metrics
(:class:`ClusterObserver`) and the gateway's own anomaly checks (:class:`AnomalyScreens`).
What they answer (a node's announcement, a node's answer) is
:mod:`modelgate.core.gateway.nodes`.

Contracts are stated on each port; the implementations live outside ``core/``
(``modelgate.cluster``: Redis or a static list, OIP gRPC; ``modelgate.observability``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from modelgate.core.gateway.nodes import NodeAnswer, NodeInfo
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import Arrays
from modelgate.core.serving.registry import LoadedVersion

__all__ = [
    "AnomalyScreens",
    "ClusterObserver",
    "NodeClient",
    "NodeDirectory",
    "ServedModels",
]


class NodeDirectory(Protocol):
    """Where nodes are found. ``nodes`` returns every live node (a network call: it has a
    timeout and raises on failure; the cluster keeps its last table then)."""

    async def nodes(self) -> list[NodeInfo]: ...

    async def close(self) -> None: ...


class ServedModels(Protocol):
    """The catalogue of models the cluster's nodes announced recently (within a bounded
    TTL, a bounded number of them), whether or not a node serves them now: a model (or a
    version) in it that no live node announces belongs to a pool scaled to zero, and a
    request for it waits for a node instead of being answered 404. ``served`` answers
    every version of each model that any node announced within the TTL, merged, whichever
    node announced it last. It is a network call (it has a timeout and raises on failure;
    the cluster keeps the last catalogue then), made at a gateway's first refresh and then
    every :data:`~modelgate.core.gateway.node_table.SERVED_READ_S`, never per request."""

    async def served(self) -> Mapping[str, Mapping[int, ModelManifest]]: ...


class NodeClient(Protocol):
    """Sends one inference to a node (OIP gRPC). Raises
    :class:`~modelgate.errors.ModelgateError`: the node's own answer mapped back to a kind,
    UNAVAILABLE when it cannot be reached or the call died with its connection
    (``details={"refused": True}`` when the node refused the call unread, at its limit of
    calls per connection), DEADLINE_EXCEEDED with ``details={"timed_out": True}`` when
    ``timeout_s`` passed (the node's own DEADLINE_EXCEEDED has no such detail). ``headers``
    travel as call metadata (credentials, ``traceparent``, the request id)."""

    async def infer(
        self,
        node: NodeInfo,
        model: str,
        version: int,
        inputs: Arrays,
        *,
        timeout_s: float,
        headers: Mapping[str, str],
    ) -> NodeAnswer: ...

    async def close(self) -> None: ...


class ClusterObserver(Protocol):
    """Metrics of the cluster (Prometheus in production). Never blocks."""

    def breaker(self, node: str, model: str | None, version: str | None, state: str) -> None: ...

    def forwarded(self, node: str, outcome: str) -> None: ...

    def retried(self, outcome: str) -> None: ...

    def nodes(self, count: int) -> None: ...

    def departed(self, node: str) -> None:
        """``node`` left the table: forget its series (node ids come and go with pods)."""


class AnomalyScreens(Protocol):
    """The gateway's anomaly checks, built from the profiles its nodes announce
    (:class:`~modelgate.core.monitoring.anomaly.AnomalyDetector`, which the gateway's
    pipeline asks of every request, as an all-in-one server's does)."""

    def announced_screen(
        self, manifest: ModelManifest, version: int, profile: Mapping[str, Any]
    ) -> object | None:
        """The check of the version from ``profile``; None when the manifest asks for none,
        the profile describes none of its inputs, or it does not parse (logged). Pure: it
        checks nothing until :meth:`attach`."""
        ...

    def attach(self, loaded: LoadedVersion, screen: Any) -> None:
        """Check the requests of ``loaded`` with ``screen`` (from :meth:`announced_screen`)."""
        ...
