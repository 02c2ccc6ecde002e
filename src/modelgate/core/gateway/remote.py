"""A gateway's models: the nodes' models, served through
:class:`~modelgate.core.gateway.cluster.Cluster`.

The gateway runs the same :class:`~modelgate.core.serving.registry.ModelRegistry` and
:class:`~modelgate.core.pipeline.inference.InferenceService` as a node: authentication, admission,
validation against the manifest, metering, monitoring and payload logging all happen on the
gateway. Only the runtime differs: :class:`RemoteRuntime` forwards the validated inputs to a
node. :class:`ClusterRepository` is the registry's repository: the models the nodes
announce, with the manifests they announce; :func:`remote_builder` makes the registry's
loaded versions out of them (no artifact, nothing to warm up).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from modelgate.core.gateway.cluster import Cluster
from modelgate.core.serving.ports import Arrays, InferenceObserver, Timing, VersionSource
from modelgate.core.serving.registry import LoadedVersion
from modelgate.core.serving.statistics import VersionStats
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["ClusterRepository", "RemoteRuntime", "remote_builder"]


class RemoteRuntime:
    """One model version on whichever node the cluster picks for each request."""

    __slots__ = ("cluster", "model", "prefer", "version")

    def __init__(self, cluster: Cluster, model: str, version: int, prefer: str = "cpu"):
        self.cluster = cluster
        self.model = model
        self.version = version
        self.prefer = prefer

    async def infer(
        self, inputs: Arrays, timing: Timing | None = None
    ) -> dict[str, np.ndarray[Any, Any]]:
        return await self.cluster.forward(
            self.model, self.version, inputs, timing, prefer=self.prefer
        )

    @property
    def queue_depth(self) -> int:
        return 0

    def close(self) -> None:
        return None


class ClusterRepository:
    """The registry's repository on a gateway: what the nodes announce."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    def names(self) -> list[str]:
        return sorted(self.cluster.catalog)

    def versions(self, name: str, override: Mapping[str, Any] | None = None) -> list[VersionSource]:
        if override:
            raise ModelgateError(
                ErrorKind.UNSUPPORTED,
                "a gateway cannot load a model with a configuration override; load it on its nodes",
            )
        versions = self.cluster.catalog.get(name)
        if versions is None:
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
        return [VersionSource(n, "", versions[n]) for n in sorted(versions)]


def remote_builder(
    cluster: Cluster, observer: InferenceObserver | None = None
) -> Callable[[VersionSource], LoadedVersion]:
    """The registry's builder of a gateway's versions."""

    def build(source: VersionSource) -> LoadedVersion:
        manifest = source.manifest
        name, number = manifest.name, source.version
        sink = observer.version(name, str(number)) if observer is not None else None
        return LoadedVersion(
            name=name,
            version=number,
            manifest=manifest,
            runtime=RemoteRuntime(cluster, name, number, manifest.hardware.prefer),
            stats=VersionStats(name, str(number), sink),
            size_bytes=0,
            batched=False,
            offload=False,
            hardware=manifest.hardware.prefer,
            path="",
        )

    return build
