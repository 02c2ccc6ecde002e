"""The composition root's transport-neutral part: ``settings -> Components``, the core
wired to the backends the settings pick (no I/O: ``open`` and ``start`` do that).

:func:`build_core_components` builds everything but the protocol adapters; it is what the
job worker runs (:mod:`modelgate.worker`), so it never imports ``modelgate.api.rest``. A
server's components, with the REST app, come from
:func:`modelgate.boot.serving.build_components`.

The process's start and close are one ordered list (:meth:`Components.lifecycle`): started
in order, closed in reverse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from modelgate.boot.alerts import build_alerts, build_fairness, build_webhook, quota_alert_sink
from modelgate.boot.deployments import build_deployments
from modelgate.boot.jobs import Jobs, build_jobs
from modelgate.boot.lifecycle import Lifecycle, Loop, Service, Step
from modelgate.boot.listeners import build_feedback, build_payload_logger
from modelgate.boot.loop_lag import LoopLag
from modelgate.boot.security import build_token_issuer, build_token_verifier
from modelgate.boot.state import State, build_state
from modelgate.boot.stores import build_abuse_guard, build_cache, build_limiter, build_quota_counter
from modelgate.cluster.stages import StagedRepository, parse_node_stages
from modelgate.core.access.authentication import Authenticator
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.admission.admission import Admission
from modelgate.core.admission.backpressure import RefusalBackpressure
from modelgate.core.admission.fairness import TenantShares
from modelgate.core.admission.metering import UsageRecorder
from modelgate.core.admission.overload import QueueDelay
from modelgate.core.admission.quotas import Quotas
from modelgate.core.admission.refusals import RefusalMemo
from modelgate.core.gateway.node_calls import from_gateway
from modelgate.core.governance.payload_logger import PayloadLogger
from modelgate.core.monitoring.alerts import AlertEvaluator
from modelgate.core.monitoring.anomaly import AnomalyDetector
from modelgate.core.monitoring.concept import ConceptMonitor
from modelgate.core.monitoring.feedback_recorder import FeedbackRecorder
from modelgate.core.monitoring.monitor import Monitor
from modelgate.core.pipeline.embeddings import EmbeddingService
from modelgate.core.pipeline.explanations import ExplainPolicy, Explanations
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.catalog import ModelCatalog
from modelgate.core.serving.ports import ModelRepository
from modelgate.core.serving.preloading import Preloader, RegistryWarmPool
from modelgate.core.serving.registry import ModelRegistry, RegistryPolicy
from modelgate.core.serving.requests import InferenceListener
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.core.traffic.shadow import ShadowRunner
from modelgate.explaining.kernel_shap import ShapKernelAttributor
from modelgate.fairness.watch import FairnessWatch
from modelgate.notify.webhook import WebhookSender
from modelgate.observability.hardware import HardwareCollector
from modelgate.observability.logs import RequestLog
from modelgate.observability.metrics import PrometheusMetrics, RecordKeeper
from modelgate.observability.tracing import OtelTracer, build_tracer
from modelgate.repository.filesystem import FileModelRepository
from modelgate.runtimes.catalog import loaders
from modelgate.settings import Settings
from modelgate.storage.sql.engine import migrate
from modelgate.storage.sql.jobs import SqlJobQueue

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from modelgate.cluster.node import NodeAnnouncer
    from modelgate.core.gateway.cluster import Cluster
    from modelgate.identity.jwt import TokenIssuer
    from modelgate.learning.runs import LearningService

__all__ = ["Components", "build_core_components"]


@dataclass
class Components:
    settings: Settings
    registry: ModelRegistry
    service: InferenceService
    embeddings: EmbeddingService
    metrics: PrometheusMetrics
    executor: ThreadPoolExecutor
    state: State
    #: the admin API's authenticator (always on); inference routes use ``authenticator``,
    #: the same one with ``MODELGATE_AUTH=required``, None otherwise
    admin_authenticator: Authenticator
    authenticator: Authenticator | None = None
    #: modelgate's own token issuer, when it has a signing key
    issuer: TokenIssuer | None = None
    quotas: Quotas | None = None
    abuse: AbuseGuard | None = None
    usage: UsageRecorder | None = None
    webhook: WebhookSender | None = None
    alerts: AlertEvaluator | None = None
    alert_webhook: WebhookSender | None = None
    payloads: PayloadLogger | None = None
    monitor: Monitor | None = None
    concept: ConceptMonitor | None = None
    tracer: OtelTracer | None = None
    requests: RequestLog | None = None
    feedback: FeedbackRecorder | None = None
    #: a gateway's nodes; a node's announcements (see modelgate.cluster)
    cluster: Cluster | None = None
    announcer: NodeAnnouncer | None = None
    #: asynchronous jobs: the use case behind /v1/jobs and a worker (started by the
    #: server when ``jobs_worker`` is on, and by ``modelgate worker``)
    jobs: Jobs | None = None
    #: deployments (pinned versions, splits, canaries) and shadow copies
    deployments: DeploymentService | None = None
    shadows: ShadowRunner | None = None
    #: the background fairness audit behind the fairness gauges and alerts (None: off)
    fairness_watch: FairnessWatch | None = None
    #: the REST app (:func:`modelgate.boot.serving.build_components`); None in a worker
    rest_app: ASGIApp | None = None
    #: the learning loop's runs and triggers (a server's; docs/learning.md)
    learning: LearningService | None = None
    #: the event loop's lag, sampled for shedding on queueing delay (a server's, when on)
    loop_lag: LoopLag | None = None
    #: back-pressure on connections whose requests keep being refused (a server's, when on)
    backpressure: RefusalBackpressure | None = None
    #: the predictive warm pool (not on a gateway)
    preloader: Preloader | None = None
    _lifecycle: Lifecycle | None = field(default=None, repr=False)

    async def open(self) -> None:
        """Start-up I/O that must finish before any request is accepted: migrations."""
        await migrate(self.state.url)

    async def start(self) -> None:
        """Start metering; load and warm the preload models (the server is live, not yet
        ready)."""
        await self.lifecycle().start()

    async def close(self) -> None:
        """After the requests in flight: close the models, write the last usage, send the
        last alerts, then let go of Redis and the database."""
        await self.lifecycle().close()

    def lifecycle(self) -> Lifecycle:
        """Every service of the process, in start order; :meth:`close` runs it backwards.
        Built once, on first use, from the components there are."""
        if self._lifecycle is None:
            self._lifecycle = Lifecycle(self._services())
        return self._lifecycle

    def _services(self) -> list[Service]:
        # Read bottom-up, this is the close order: jobs (running jobs go back to the queue
        # at once), the node's announcement (gateways stop sending work here first), the
        # loops, the models, the recorders' last writes and alerts, then Redis, the
        # database, the last request lines and spans, and the model threads.
        services: list[Service] = [Step("model threads", close=self._shut_executor)]
        if self.tracer is not None:  # the last spans (waits up to the exporter's timeout)
            services.append(Step("tracer", close=_in_thread(self.tracer.close)))
        if self.requests is not None:  # the last request lines
            services.append(Step("request log", close=_in_thread(self.requests.close)))
        if self.abuse is not None:
            services.append(Step("abuse guard", close=self.abuse.close))
        services.append(Step("database", close=self.state.engine.dispose))
        if self.alert_webhook is not None:
            services.append(Step("alert webhook", close=self.alert_webhook.close))
        if self.webhook is not None:
            services.append(Step("quota webhook", close=self.webhook.close))
        if self.service.cache is not None:
            services.append(Step("result cache", close=self.service.cache.close))
        admission = self.service.admission
        if admission is not None:
            services.append(Step("rate limiter", close=admission.limiter.close))
            if admission.quotas is not None:
                services.append(Step("quota counter", close=admission.quotas.close))
        # the recorders: started before the models load, closed after they are
        for recorder in (self.feedback, self.payloads, self.usage, self.alerts):
            if recorder is not None:
                services.append(recorder)
        if self.announcer is not None:
            services.append(Step("node directory", close=self.announcer.directory.close))
        watch = None
        if self.cluster is not None:
            from modelgate.boot.cluster import ClusterWatch

            interval = self.settings.cluster_refresh_seconds
            watch = ClusterWatch(self.cluster, self.registry, interval)
            # the node table is read before the registry starts: the gateway's preload
            # models are the nodes'
            services.append(Step("cluster", start=watch.first_refresh, close=self.cluster.close))
        rollout_stop = None
        if self.deployments is not None:
            deployments, rollout = self.deployments, Loop("rollout", self.deployments.run)

            async def route() -> None:  # before the first request is routed
                await deployments.refresh()
                await rollout.start()

            async def stop() -> None:
                await rollout.close()
                await deployments.close()

            # read before the models load, let go of before they close: two steps
            services.append(Step("deployments", start=route))
            rollout_stop = Step("rollout", close=stop)
        repository = self.registry.repository
        if isinstance(repository, StagedRepository):  # before the registry preloads them
            services.append(Step("stage placement", start=self._place_stages))
        services.append(self.registry)
        if self.fairness_watch is not None:  # audits loaded models: after they load
            services.append(Loop("fairness audit", self.fairness_watch.run))
        if self.shadows is not None:
            services.append(Step("shadows", close=self.shadows.close))
        if rollout_stop is not None:
            services.append(rollout_stop)
        if self.learning is not None:  # its runs stop before the models and deployments
            services.append(Loop("learning triggers", self.learning.run_triggers))
            services.append(Step("learning runs", close=self.learning.close))
        if watch is not None:
            services.append(Loop("cluster watch", watch.run))
        interval = self.settings.preload_interval_seconds
        if self.preloader is not None and interval > 0:
            pool = RegistryWarmPool(self.registry)
            services.append(Loop("preloader", partial(self.preloader.run, pool, interval)))
        if self.announcer is not None:
            services.append(
                Step("announcer", start=self.announcer.start, close=self.announcer.leave)
            )
        if self.jobs is not None:  # started by the server or the worker, not here
            services.append(Step("jobs", close=self.jobs.close))
        if self.loop_lag is not None:  # a server's queueing-delay samples
            services.append(self.loop_lag)
        return services

    async def _place_stages(self) -> None:
        repository = self.registry.repository
        assert isinstance(repository, StagedRepository)
        if self.announcer is not None:  # the stages other nodes hold, in their announcements
            repository.directory = self.announcer.directory
            repository.node_id = self.announcer.node_id
        await repository.place()

    async def _shut_executor(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _in_thread(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        await asyncio.to_thread(close)

    return call


def build_core_components(settings: Settings) -> Components:
    """Everything but the protocol adapters (``rest_app`` is None): what a job worker runs,
    and what :func:`modelgate.boot.serving.build_components` adds the REST app to."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = PrometheusMetrics()
    if settings.role != "gateway":  # what a node's hardware does, for its autoscaler
        metrics.registry.register(HardwareCollector())
    anomalies = AnomalyDetector(metrics)
    cache = build_cache(settings, metrics)
    overload = build_overload(settings, metrics)
    executor = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="modelgate-model")
    budget = settings.memory_budget_mb
    policy = RegistryPolicy(
        inline_threshold_s=settings.inline_threshold_ms / 1000,
        idle_unload_s=settings.idle_unload_seconds,
        memory_budget_bytes=budget * 1024 * 1024 if budget is not None else None,
        drain_timeout_s=settings.drain_timeout_seconds,
    )
    tracer = build_tracer(
        settings.otlp_endpoint,
        sample_ratio=settings.trace_sample_ratio,
        service_name=settings.trace_service_name,
    )
    cluster = None
    if settings.role == "gateway":
        from modelgate.boot.cluster import build_cluster
        from modelgate.core.gateway.remote import ClusterRepository, remote_builder

        cluster = build_cluster(settings, metrics, tracer)
        registry = ModelRegistry(
            ClusterRepository(cluster),
            {},
            observer=metrics,
            policy=policy,
            builder=remote_builder(
                cluster,
                metrics,
                merge=settings.gateway_merge,
                merge_calls=settings.gateway_merge_calls,
                screens=anomalies,  # from the profiles its nodes announce
            ),
        )
    else:
        registry = ModelRegistry(
            _node_repository(settings),
            loaders(),
            observer=metrics,
            executor=executor,
            policy=policy,
            load_hooks=[anomalies.prepare]
            + ([cache.prepare] if cache is not None else [])
            + ([overload.watch_model] if overload is not None else []),  # its queue's wait
        )
    state = build_state(settings)
    usage = state.usage
    preloader = None
    if settings.role != "gateway":  # a gateway's models are its nodes' to keep warm
        preloader = Preloader(
            usage,
            budget_bytes=policy.memory_budget_bytes,
            lookahead=timedelta(minutes=settings.preload_lookahead_minutes),
            weeks=settings.preload_history_weeks,
        )
        registry.need = preloader.need

    async def totals(tenant_id: str, since: datetime) -> tuple[int, int, int]:
        found = await usage.totals(tenant_id, since)
        return found.requests, found.rows, found.tokens

    webhook = build_webhook(settings)
    quotas = Quotas(build_quota_counter(settings), totals=totals, alert=quota_alert_sink(webhook))
    identity = state.identity

    async def touch_key(key_id: str, at: datetime) -> None:
        if ":" not in key_id:  # "jwt:<sub>" and "admin:..." are not stored keys
            await identity.touch_key(key_id, at)

    recorder = UsageRecorder(
        usage, touch_key=touch_key, flush_interval_s=settings.usage_flush_seconds
    )
    admission = Admission(
        build_limiter(settings),
        quotas=quotas,
        max_inflight=settings.max_inflight,
        observer=metrics,
        memo=RefusalMemo(observer=metrics, usage=recorder),
        overload=overload,
    )
    payload_logger = build_payload_logger(settings, state)
    requests = RequestLog() if settings.access_log else None
    monitor = Monitor(
        registry,
        window_rows=settings.monitoring_window_rows,
        window_s=settings.monitoring_window_seconds,
        min_rows=settings.monitoring_min_rows,
        anomalies=anomalies,
    )
    feedback, concept = build_feedback(settings, state, registry)
    catalog = ModelCatalog(registry, audit=state.audit)
    fairness, fairness_watch = build_fairness(settings, state, catalog, metrics)
    deployments, shadows = build_deployments(settings, state, registry, metrics, fairness)
    listeners: list[InferenceListener] = [monitor, feedback]
    if payload_logger is not None:
        listeners.append(payload_logger)
    # a node's calls from its gateways were metered and recorded there: only monitored here
    forwarded = from_gateway if settings.role == "node" else None
    if admission.overload is not None:  # not ready while shedding lasts
        catalog.ready_checks.append(admission.overload.ready)
    service = InferenceService(
        registry,
        catalog=catalog,
        admission=admission,
        usage=recorder,
        observer=metrics,
        listeners=listeners,
        tracer=tracer,
        default_timeout_s=settings.request_timeout_seconds,
        anomalies=anomalies,
        cache=cache,
        deployments=deployments.router,
        shadows=shadows,
        forwarded=forwarded,
        forwarded_listeners=[monitor],
        explanations=Explanations(
            ExplainPolicy(
                max_rows=settings.explain_max_rows,
                samples=settings.explain_samples,
                background_rows=settings.explain_background_rows,
                concurrency=settings.explain_concurrency,
                queue=settings.explain_queue,
                tenant_queue=settings.explain_tenant_queue,
                default_per_minute=settings.explain_default_per_minute,
                learned_for_tenants=settings.explain_learned_models == "everyone",
            ),
            ShapKernelAttributor(),  # SHAP is imported on the first KernelSHAP explanation
            limiter=admission.limiter,
            meter=recorder,
            on_explained=metrics.explained,
        ),
    )
    records: list[tuple[str, RecordKeeper]] = [("feedback", feedback)]  # rows, by reason
    if payload_logger is not None:
        records.append(("payloads", payload_logger))
    metrics.track(registry=registry, admission=admission, usage=recorder, records=records)
    alerts, alert_webhook = build_alerts(settings, metrics, monitor, concept, fairness_watch)
    embeddings = EmbeddingService(service)
    # The admin API always authenticates; inference routes only with MODELGATE_AUTH=required.
    issuer = build_token_issuer(settings)
    admin_authenticator = Authenticator(
        state.identity,
        admin_key=settings.admin_key.get_secret_value() if settings.admin_key else None,
        tokens=build_token_verifier(settings, issuer),
        cache_ttl_s=settings.key_cache_seconds,
        stale_if_error_s=settings.key_stale_if_error_seconds,
    )
    authenticator = admin_authenticator if settings.auth == "required" else None
    abuse = build_abuse_guard(settings, metrics)
    # job items are sealed with the payload keys when there are any (docs/privacy.md)
    queue = SqlJobQueue(state.engine, state.payload_service.cipher)
    jobs = build_jobs(settings, queue, service, state.identity)
    return Components(
        settings,
        registry,
        service,
        embeddings,
        metrics,
        executor,
        state,
        admin_authenticator,
        authenticator,
        issuer=issuer,
        quotas=quotas,
        abuse=abuse,
        usage=recorder,
        webhook=webhook,
        alerts=alerts,
        alert_webhook=alert_webhook,
        payloads=payload_logger,
        monitor=monitor,
        concept=concept,
        tracer=tracer,
        requests=requests,
        feedback=feedback,
        cluster=cluster,
        announcer=build_announcer(settings, registry),
        jobs=jobs,
        deployments=deployments,
        shadows=shadows,
        fairness_watch=fairness_watch,
        preloader=preloader,
    )


def build_overload(settings: Settings, metrics: PrometheusMetrics) -> QueueDelay | None:
    """The queueing-delay controller, None when ``shed_queue_target_ms`` is 0 (off: the
    adapters then test one attribute for None, and no timer runs)."""
    if settings.shed_queue_target_ms <= 0:
        return None
    return QueueDelay(
        target_s=settings.shed_queue_target_ms / 1000,
        interval_s=settings.shed_queue_interval_ms / 1000,
        ready_after_s=settings.shed_queue_unready_seconds,
        max_wait_s=settings.shed_queue_max_wait_ms / 1000 or None,
        count=metrics.shed_for_delay,
        count_tenant=metrics.shed_tenant_for_delay,
        shares=TenantShares(half_life_s=settings.shed_queue_share_half_life_seconds),
        gradual=settings.shed_queue_law == "pie",
    )


def _node_repository(settings: Settings) -> ModelRepository:
    """The models a server loads from its repository, never a sharded version whole; a
    node's with the stages of sharded models it holds (docs/scale-out.md, "Models larger
    than one node: sharding")."""
    budget = settings.memory_budget_mb
    return StagedRepository(
        FileModelRepository(str(settings.model_repository)),
        budget_bytes=budget * 1024 * 1024 if budget is not None else None,
        wanted=parse_node_stages(settings.node_stages),
        holds_stages=settings.role == "node",
    )


def build_announcer(settings: Settings, registry: ModelRegistry) -> NodeAnnouncer | None:
    if settings.role != "node":
        return None
    from modelgate.boot import cluster

    return cluster.build_announcer(settings, registry)
