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
its own deadline (:class:`MergingRuntime`).

**Anomaly checks.** A version whose manifest has an ``anomaly`` section is checked per
request: its score, flag and refusal belong to the caller's own rows. A node checks each
call's inputs as a whole, so a merged call checked there would give every caller the
batch's score, and refuse them all for one caller's odd row. So the gateway checks each
request itself, before it merges it with others, with the check an all-in-one server runs
(:class:`~modelgate.core.monitoring.anomaly.AnomalyDetector`, through the pipeline's own
step, before admission: a refusal costs no node call and no rate limit), built from the
statistics of the reference profile that the nodes announce with the manifest
(:mod:`modelgate.core.monitoring.anomaly_profiles`: the very numbers the node reads, so
the very bounds). Its calls say so in their metadata, and the node skips its own check of
them (:mod:`modelgate.core.gateway.node_calls`); drift monitoring, which needs the whole
profile, stays on the node. The other design, the gateway sending each part's row counts
and the node checking and answering each part apart, would put the per-caller outcomes,
refusals included, inside one call's answer (a node would have to run the call for some
parts and refuse others), cost a node the same checks plus the splitting, and still check
after the gateway's admission. A version whose nodes do not all announce the same profile
(an older node, or a static ``MODELGATE_NODES`` list of OIP servers) is checked on the
nodes and not merged, as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.pipeline import PipelineRuntime
from modelgate.core.gateway.ports import AnomalyScreens
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
    """One model version on whichever node the cluster picks for each request.
    ``screened``: the gateway checks the version's requests for anomalies, and its calls
    tell the node not to check them again."""

    __slots__ = ("cluster", "model", "prefer", "screened", "version")

    def __init__(
        self,
        cluster: Cluster,
        model: str,
        version: int,
        prefer: str = "cpu",
        *,
        screened: bool = False,
    ):
        self.cluster = cluster
        self.model = model
        self.version = version
        self.prefer = prefer
        self.screened = screened

    async def infer(
        self, inputs: Arrays, timing: Timing | None = None
    ) -> dict[str, np.ndarray[Any, Any]]:
        return await self.cluster.forward(
            self.model, self.version, inputs, timing, prefer=self.prefer, screened=self.screened
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


def merge_policy(manifest: ModelManifest, *, screened: bool = False) -> BatchingPolicy | None:
    """How a gateway merges the version's requests: the manifest's batching with no queue
    delay; None when they are not merged: no batching section, or an anomaly check that
    the gateway does not run itself (``screened`` false: the node would check the merged
    call as a whole)."""
    if manifest.batching is None or (manifest.anomaly is not None and not screened):
        return None
    return manifest.batching.model_copy(update={"max_queue_delay_us": 0})


def remote_builder(
    cluster: Cluster,
    observer: InferenceObserver | None = None,
    *,
    merge: bool = True,
    merge_calls: int = MERGE_CALLS,
    screens: AnomalyScreens | None = None,
) -> Callable[[VersionSource], LoadedVersion]:
    """The registry's builder of a gateway's versions; ``merge`` (default on) merges
    concurrent requests into at most ``merge_calls`` node calls in flight per version.
    ``screens``: the gateway's anomaly checks, given every version with an ``anomaly``
    section whose nodes announce its profile (None: the nodes check, and such versions
    are not merged)."""

    def build(source: VersionSource) -> LoadedVersion:
        manifest = source.manifest
        name, number = manifest.name, source.version
        sink = observer.version(name, str(number)) if observer is not None else None
        stats = VersionStats(name, str(number), sink)
        screen = None
        if screens is not None and manifest.anomaly is not None:
            profile = cluster.profiles.get(name, {}).get(number)
            if profile is not None:
                screen = screens.announced_screen(manifest, number, profile)
        screened = screen is not None
        runtime: ModelRuntime = (
            PipelineRuntime(cluster, manifest, number)  # a sharded model: its stages in turn
            if manifest.stages
            else RemoteRuntime(cluster, name, number, manifest.hardware.prefer, screened=screened)
        )
        policy = merge_policy(manifest, screened=screened) if merge else None
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
        loaded = LoadedVersion(
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
        if screens is not None and screen is not None:
            screens.attach(loaded, screen)
        return loaded

    return build
