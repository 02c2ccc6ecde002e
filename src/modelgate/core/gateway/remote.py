"""A gateway's models: the nodes' models, served through
:class:`~modelgate.core.gateway.cluster.Cluster`.

The gateway runs the same :class:`~modelgate.core.serving.registry.ModelRegistry` and
:class:`~modelgate.core.pipeline.inference.InferenceService` as a node: authentication, admission,
validation against the manifest, metering, monitoring and payload logging all happen on the
gateway. Only the runtime differs: :class:`RemoteRuntime` forwards the validated inputs to a
node. :class:`ClusterRepository` is the registry's repository: the models the nodes
announce, with the manifests they announce; :func:`remote_builder` makes the registry's
loaded versions out of them (no artifact, nothing to warm up).

One gRPC call to a node costs more CPU (client and node together) than an all-in-one
process spends on a whole request (docs/benchmarks.md), so a gateway merges concurrent
requests for the same version into one call: :func:`remote_builder` wraps the version's
:class:`RemoteRuntime` in the :class:`~modelgate.core.serving.batching.BatchingRuntime` a
node runs, when the manifest has a ``batching`` section. With no queue delay: requests merge
only while ``merge_calls`` calls of the version are already in flight, so an idle gateway
adds no latency, and the calls in flight stay bounded. Tenants take turns in the gateway's
fair queue, each caller is charged its rows' share of the call, and each stops waiting at
its own deadline (:class:`MergingRuntime`). A version whose manifest
has an ``anomaly`` section is not merged: the node scores each call's inputs as a whole, and
a merged call's score (or refusal) would be the whole batch's, not each caller's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from modelgate.core.gateway.cluster import Cluster
from modelgate.core.serving.batching import BatchingRuntime
from modelgate.core.serving.manifest import BatchingPolicy, ModelManifest
from modelgate.core.serving.ports import (
    Arrays,
    InferenceObserver,
    ModelRuntime,
    Timing,
    VersionSource,
)
from modelgate.core.serving.registry import LoadedVersion
from modelgate.core.serving.statistics import VersionStats
from modelgate.errors import ErrorKind, ModelgateError, deadline_exceeded

__all__ = [
    "MERGE_CALLS",
    "ClusterRepository",
    "MergingRuntime",
    "RemoteRuntime",
    "merge_policy",
    "remote_builder",
]

#: merged calls in flight per model version, by default (``MODELGATE_GATEWAY_MERGE_CALLS``)
MERGE_CALLS = 8
#: a caller of a merged call stops waiting this long after its deadline: a call of its own
#: (the batcher's lone-request path) times out at the deadline itself, and its node is
#: blamed for it (its breakers count the timeout), which cancelling it first would hide
_DEADLINE_GRACE_S = 0.005


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


class MergingRuntime:
    """A version's requests merged into node calls (``batcher``, a :class:`BatchingRuntime`
    around its :class:`RemoteRuntime`). A merged call runs until the latest of its callers'
    deadlines, so each caller stops waiting at its own: DEADLINE_EXCEEDED, as a call of its
    own would have answered, while the call goes on for the others."""

    __slots__ = ("batcher",)

    def __init__(self, batcher: BatchingRuntime):
        self.batcher = batcher

    async def infer(
        self, inputs: Arrays, timing: Timing | None = None
    ) -> dict[str, np.ndarray[Any, Any]]:
        deadline = timing.deadline if timing is not None else None
        if deadline is None:
            return await self.batcher.infer(inputs, timing)
        scope = asyncio.timeout(deadline - time.monotonic() + _DEADLINE_GRACE_S)
        try:
            async with scope:
                return await self.batcher.infer(inputs, timing)
        except TimeoutError:
            if not scope.expired():
                raise
            raise deadline_exceeded() from None

    @property
    def queue_depth(self) -> int:
        return self.batcher.queue_depth

    def close(self) -> None:
        self.batcher.close()


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


def merge_policy(manifest: ModelManifest) -> BatchingPolicy | None:
    """How a gateway merges the version's requests: the manifest's batching with no queue
    delay; None when they are not merged (no batching section, or an anomaly check)."""
    if manifest.batching is None or manifest.anomaly is not None:
        return None
    return manifest.batching.model_copy(update={"max_queue_delay_us": 0})


def remote_builder(
    cluster: Cluster,
    observer: InferenceObserver | None = None,
    *,
    merge: bool = True,
    merge_calls: int = MERGE_CALLS,
) -> Callable[[VersionSource], LoadedVersion]:
    """The registry's builder of a gateway's versions; ``merge`` (default on) merges
    concurrent requests into at most ``merge_calls`` node calls in flight per version."""

    def build(source: VersionSource) -> LoadedVersion:
        manifest = source.manifest
        name, number = manifest.name, source.version
        sink = observer.version(name, str(number)) if observer is not None else None
        stats = VersionStats(name, str(number), sink)
        runtime: ModelRuntime = RemoteRuntime(cluster, name, number, manifest.hardware.prefer)
        policy = merge_policy(manifest) if merge else None
        if policy is not None:
            runtime = MergingRuntime(
                BatchingRuntime(
                    runtime,
                    policy,
                    observer=stats,
                    concurrency=merge_calls,
                    units_output=manifest.token_output,
                )
            )
        return LoadedVersion(
            name=name,
            version=number,
            manifest=manifest,
            runtime=runtime,
            stats=stats,
            size_bytes=0,
            batched=policy is not None,
            offload=False,
            hardware=manifest.hardware.prefer,
            path="",
        )

    return build
