"""The scale-out pieces built from settings: a gateway's cluster (directory, node client,
breakers, retry budget), a node's announcer, and the watch that keeps a gateway's models
in step with its nodes. Called by :mod:`modelgate.boot.components` for ``--role gateway`` and
``--role node``; imported only then.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from modelgate.cluster.node import NodeAnnouncer
from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.regions import RegionPolicy
from modelgate.core.serving.registry import ModelRegistry
from modelgate.errors import ModelgateError
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.observability.tracing import OtelTracer
from modelgate.settings import Settings
from modelgate.storage.redis.node_directory import RedisNodeDirectory

__all__ = [
    "ClusterWatch",
    "build_announcer",
    "build_cluster",
    "build_node_directory",
    "build_region_policy",
]

log = logging.getLogger("modelgate.cluster")


class ClusterWatch:
    """Keeps a gateway's node table fresh, and its models in step with it."""

    def __init__(self, cluster: Cluster, registry: ModelRegistry, interval_s: float):
        self.cluster = cluster
        self.registry = registry
        self.interval_s = interval_s

    async def first_refresh(self) -> None:
        """Read the node directory before the registry starts, so that the gateway's
        preload models exist (a directory that does not answer is logged; :meth:`run`
        keeps trying)."""
        try:
            await self.cluster.refresh()
        except Exception as exc:
            log.warning("the node directory did not answer: %r", exc)

    async def run(self) -> None:
        """Re-read the node directory every ``interval_s``; a loaded model whose versions
        or manifests changed is loaded again (a handle swap: nothing to load)."""
        cluster = self.cluster
        failing = False
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                changed = await cluster.refresh()
            except Exception as exc:  # keep routing on the last table
                if not failing:
                    log.warning("the node directory did not answer: %r", exc)
                failing = True
                continue
            failing = False
            for name in sorted(changed):
                if name in cluster.catalog and self.registry.versions(name):
                    try:
                        await self.registry.load(name)
                    except ModelgateError as exc:
                        log.warning("model %s from the nodes: %s", name, exc.message)


def build_cluster(
    settings: Settings, metrics: PrometheusMetrics, tracer: OtelTracer | None
) -> Cluster:
    """A gateway's nodes: found in Redis, or the static ``MODELGATE_NODES`` list."""
    from modelgate.cluster.client import GrpcNodeClient
    from modelgate.core.gateway.breaker import BreakerPolicy
    from modelgate.core.gateway.capacity import CapacityPolicy
    from modelgate.core.gateway.cluster import Cluster
    from modelgate.core.gateway.cold_start import ColdStartWait
    from modelgate.core.gateway.node_table import SERVED_READ_S
    from modelgate.core.gateway.ports import NodeDirectory, ServedModels
    from modelgate.core.gateway.retry import RetryBudget
    from modelgate.observability.cluster_metrics import ClusterMetrics

    credential = settings.node_key.get_secret_value() if settings.node_key else None
    ca = settings.node_tls_ca_file
    roots = ca.read_bytes() if ca is not None else None
    directory: NodeDirectory
    served: ServedModels | None = None
    third_party: frozenset[str] = frozenset()
    if settings.nodes is not None:
        from modelgate.cluster.directory import StaticNodeDirectory, keyed_nodes

        addresses = [a.strip() for a in settings.nodes.split(",") if a.strip()]
        models = [m.strip() for m in (settings.node_models or "").split(",") if m.strip()]
        keyed = keyed_nodes(addresses, settings.node_key_nodes)
        directory = StaticNodeDirectory(
            addresses,
            credential=credential,
            keyed=keyed,
            root_certificates=roots,
            models=models or None,
            max_models=settings.node_max_models,
            read_timeout_s=settings.node_read_timeout_seconds,
        )
        third_party = frozenset(directory.addresses) - keyed
    else:
        directory = build_node_directory(settings)
        if settings.served_models_ttl_seconds > 0:
            served = directory  # its catalogue of models served recently (own region's)
    if settings.region_redis_urls is not None:
        from modelgate.cluster.regions import RegionalNodeDirectory

        urls = settings.region_redis_urls.get_secret_value().split(",")
        others = [build_node_directory(settings, url.strip()) for url in urls if url.strip()]
        directory = RegionalNodeDirectory(directory, others)
    client = GrpcNodeClient(
        credential=credential,
        uncredentialed=third_party,
        max_message_bytes=settings.grpc_max_message_bytes,
        max_elements=settings.max_elements,
        root_certificates=roots,
        # a node refuses the calls over its limit per connection, and counts a call a while
        # after its answer left: half of it leaves room (gateways and nodes share settings)
        max_streams_per_connection=max(1, settings.grpc_max_concurrent_streams // 2),
    )
    headers = None
    if tracer is not None:

        def headers() -> dict[str, str]:
            carrier: dict[str, str] = {}
            tracer.inject(carrier)  # the request's span: the node's span is its child
            return carrier

    observer = ClusterMetrics(metrics.registry)
    cold_start = ColdStartWait(
        settings.cold_start_wait_seconds, max_waiting=settings.cold_start_max_waiting
    )
    observer.watch_cold_start(lambda: cold_start.waiting)
    return Cluster(
        directory,
        client,
        breaker=BreakerPolicy(settings.breaker_failures, settings.breaker_open_seconds),
        budget=RetryBudget(settings.retry_budget_ratio),
        default_timeout_s=settings.node_timeout_seconds,
        max_attempts=settings.node_max_attempts,
        headers=headers,
        observer=observer,
        regions=build_region_policy(settings, metrics),
        capacity=CapacityPolicy(settings.ondemand_saturation),
        cold_start=cold_start,
        served=served,
        # a short TTL is read as often: a gateway holds no model much past it
        served_read_s=min(SERVED_READ_S, settings.served_models_ttl_seconds or SERVED_READ_S),
    )


def build_region_policy(settings: Settings, metrics: PrometheusMetrics) -> RegionPolicy | None:
    """A gateway's region policy (None without ``MODELGATE_REGION``: no regions)."""
    if settings.region is None:
        return None
    from modelgate.observability.region_metrics import RegionMetrics

    order = [r.strip() for r in settings.region_failover.split(",") if r.strip()]
    return RegionPolicy(settings.region, order, observer=RegionMetrics(metrics.registry))


def build_node_directory(settings: Settings, url: str | None = None) -> RedisNodeDirectory:
    """The node directory in ``url`` (another region's), else in ``MODELGATE_REDIS_URL``."""
    from modelgate.storage.redis.client import create_redis_client

    if url is None:
        assert settings.redis_url is not None
        url = settings.redis_url.get_secret_value()
    timeout = settings.redis_timeout_seconds
    client = create_redis_client(
        url,
        connect_timeout_s=timeout,
        read_timeout_s=max(timeout, 1.0),  # a SCAN of every announcement
        max_connections=4,
    )
    return RedisNodeDirectory(
        client,
        prefix=settings.redis_key_prefix,
        ttl_s=settings.node_ttl_seconds,
        served_ttl_s=settings.served_models_ttl_seconds,
    )


def build_announcer(settings: Settings, registry: ModelRegistry) -> NodeAnnouncer | None:
    """A node's announcements in Redis (None without Redis: list it in the gateway's
    ``MODELGATE_NODES`` instead)."""
    if settings.role != "node" or settings.redis_url is None:
        return None

    from modelgate.cluster.node import detect_hardware, total_memory_bytes

    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else socket.gethostname()
    return NodeAnnouncer(
        build_node_directory(settings),
        registry,
        node_id=settings.node_id or f"{socket.gethostname()}-{settings.grpc_port}",
        address=settings.node_address or f"{host}:{settings.grpc_port}",
        hardware=settings.node_hardware or detect_hardware(),
        memory_bytes=total_memory_bytes(),
        region=settings.region,
        capacity=settings.capacity_class,
        interval_s=settings.node_heartbeat_seconds,
        # gateways re-read the directory every cluster_refresh_seconds: give them that,
        # and a half, to see the node draining before it stops accepting calls
        drain_s=settings.cluster_refresh_seconds * 1.5,
    )
