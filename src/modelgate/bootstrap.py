"""The one place that picks implementations from settings and wires the core to them.

``build_components`` only constructs (no I/O); ``Components.start`` does the start-up I/O:
database migrations, then loading and warming the preload models.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.api.admin.app import build_admin_app
from modelgate.api.openai.embeddings import OpenAIHandlers
from modelgate.api.rest.app import RestApp, RestLimits
from modelgate.api.rest.jobs import JobRoutes
from modelgate.core.access.authentication import Authenticator, TokenVerifier
from modelgate.core.access.idempotency import IdempotencyService
from modelgate.core.access.oauth import TokenService
from modelgate.core.access.tenancy import TenancyService
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.admission.admission import Admission
from modelgate.core.admission.metering import UsageRecorder
from modelgate.core.admission.quotas import QuotaAlert, Quotas
from modelgate.core.admission.usage import UsageService
from modelgate.core.governance.payload_logger import PayloadLogger
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.governance.redaction import pseudonym
from modelgate.core.monitoring.alerts import AlertEvaluator, AlertSource
from modelgate.core.monitoring.anomaly import AnomalyDetector
from modelgate.core.monitoring.concept import ConceptAlertSource, ConceptMonitor
from modelgate.core.monitoring.feedback import FeedbackService
from modelgate.core.monitoring.feedback_recorder import FeedbackRecorder
from modelgate.core.monitoring.feedback_subjects import FeedbackSubjects
from modelgate.core.monitoring.monitor import DriftAlertSource, Monitor
from modelgate.core.serving.embeddings import EmbeddingService
from modelgate.core.serving.inference import InferenceListener, InferenceService
from modelgate.core.serving.registry import ModelRegistry, RegistryPolicy
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.core.traffic.routing import DeploymentRouter
from modelgate.core.traffic.shadow import ShadowRunner
from modelgate.job_setup import Jobs, build_jobs
from modelgate.notify.webhook import WebhookSender
from modelgate.observability.alerting import MetricsAlertSource, alert_sink, read_alert_rules
from modelgate.observability.deployment_metrics import PrometheusDeploymentMetrics
from modelgate.observability.logs import RequestLog
from modelgate.observability.metrics import PrometheusMetrics, RecordKeeper
from modelgate.observability.tracing import OtelTracer, build_tracer
from modelgate.repository.filesystem import FileModelRepository
from modelgate.runtimes.catalog import loaders
from modelgate.settings import Settings
from modelgate.shared_stores import (
    build_abuse_guard,
    build_cache,
    build_canary_windows,
    build_limiter,
    build_quota_counter,
)
from modelgate.storage.crypto import AesGcmCipher
from modelgate.storage.sql.audit import SqlAuditLog
from modelgate.storage.sql.deployments import SqlDeploymentStore
from modelgate.storage.sql.engine import create_engine, database_url_for, migrate
from modelgate.storage.sql.feedback import SqlFeedbackStore
from modelgate.storage.sql.idempotency import SqlIdempotencyStore
from modelgate.storage.sql.identity import SqlIdentityStore
from modelgate.storage.sql.jobs import SqlJobQueue
from modelgate.storage.sql.payloads import SqlPayloadStore
from modelgate.storage.sql.usage import SqlUsageStore

if TYPE_CHECKING:
    from modelgate.cluster.node import NodeAnnouncer
    from modelgate.core.gateway.cluster import Cluster
    from modelgate.identity.jwt import TokenIssuer

__all__ = ["Components", "build_components"]

log = logging.getLogger("modelgate")


@dataclass
class Components:
    settings: Settings
    registry: ModelRegistry
    service: InferenceService
    embeddings: EmbeddingService
    metrics: PrometheusMetrics
    rest_app: RestApp
    executor: ThreadPoolExecutor
    state: State | None = None
    authenticator: Authenticator | None = None
    abuse: AbuseGuard | None = None
    usage: UsageRecorder | None = None
    webhook: WebhookSender | None = None
    alerts: AlertEvaluator | None = None
    alert_webhook: WebhookSender | None = None
    payloads: PayloadLogger | None = None
    monitor: Monitor | None = None
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
    _watch: asyncio.Task[None] | None = None
    _rollout: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Start-up I/O that must finish before any request is accepted: migrations."""
        if self.state is not None:
            await migrate(self.state.url)

    async def start(self) -> None:
        """Start metering; load and warm the preload models (the server is live, not yet
        ready)."""
        if self.usage is not None:
            await self.usage.start()
        if self.alerts is not None:
            await self.alerts.start()
        if self.payloads is not None:
            await self.payloads.start()
        if self.feedback is not None:
            await self.feedback.start()
        watch = None
        if self.cluster is not None:
            from modelgate.cluster.setup import ClusterWatch

            watch = ClusterWatch(self.cluster, self.registry, self.settings.cluster_refresh_seconds)
            await watch.first_refresh()
        if self.deployments is not None:  # before the first request is routed
            await self.deployments.refresh()
            self._rollout = asyncio.get_running_loop().create_task(self.deployments.run())
        await self.registry.start()
        if watch is not None:
            self._watch = asyncio.get_running_loop().create_task(watch.run())
        if self.announcer is not None:
            await self.announcer.start()

    async def close(self) -> None:
        """After the requests in flight: close the models, write the last usage, send the
        last alerts, then let go of Redis and the database."""
        if self.jobs is not None:  # running jobs go back to the queue at once
            await self.jobs.close()
        if self.announcer is not None:  # gateways stop sending work here first
            await self.announcer.leave()
        if self._watch is not None:
            self._watch.cancel()
        if self._rollout is not None:
            self._rollout.cancel()
        if self.deployments is not None:
            await self.deployments.close()
        if self.shadows is not None:
            await self.shadows.close()
        await self.registry.close()
        if self.cluster is not None:
            await self.cluster.close()
        if self.announcer is not None:
            await self.announcer.directory.close()
        if self.alerts is not None:
            await self.alerts.close()
        if self.usage is not None:
            await self.usage.close()
        if self.payloads is not None:
            await self.payloads.close()
        if self.feedback is not None:
            await self.feedback.close()
        admission = self.service.admission
        if admission is not None:
            if admission.quotas is not None:
                await admission.quotas.close()
            await admission.limiter.close()
        if self.service.cache is not None:
            await self.service.cache.close()
        if self.webhook is not None:
            await self.webhook.close()
        if self.alert_webhook is not None:
            await self.alert_webhook.close()
        if self.state is not None:
            await self.state.engine.dispose()
        if self.abuse is not None:
            await self.abuse.close()
        if self.requests is not None:  # the last request lines
            await asyncio.to_thread(self.requests.close)
        if self.tracer is not None:  # the last spans (waits up to the exporter's timeout)
            await asyncio.to_thread(self.tracer.close)
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class State:
    """The database behind tenants, keys, the audit trail, usage and prices."""

    url: str
    engine: AsyncEngine
    identity: SqlIdentityStore
    audit: SqlAuditLog
    tenancy: TenancyService
    usage: SqlUsageStore
    usage_service: UsageService
    payloads: SqlPayloadStore
    payload_service: PrivacyService
    feedback: SqlFeedbackStore
    feedback_service: FeedbackService
    feedback_subjects: FeedbackSubjects


def build_webhook(settings: Settings) -> WebhookSender | None:
    if settings.quota_webhook_url is None:
        return None
    return WebhookSender(
        settings.quota_webhook_url,
        secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        timeout_s=settings.webhook_timeout_seconds,
    )


def quota_alert_sink(webhook: WebhookSender | None) -> Callable[[QuotaAlert], None]:
    """Log each quota alert, and POST it to the webhook when one is configured."""

    def alert(event: QuotaAlert) -> None:
        percent = round(event.threshold * 100)
        log.warning(
            "tenant %s has used %d%% of its %s per %s quota (%d of %d)",
            event.tenant_id, percent, event.unit, event.period, event.used, event.limit,
        )  # fmt: skip
        if webhook is not None:
            payload = {
                "type": "quota.threshold",
                "tenant_id": event.tenant_id,
                "quota": f"{event.unit}_per_{event.period}",
                "period_start": event.period_start.isoformat(),
                "limit": event.limit,
                "used": event.used,
                "threshold_percent": percent,
            }
            webhook.send("quota.threshold", payload)

    return alert


def build_alerts(
    settings: Settings,
    metrics: PrometheusMetrics,
    monitor: Monitor | None = None,
    concept: ConceptMonitor | None = None,
) -> tuple[AlertEvaluator | None, WebhookSender | None]:
    """The built-in alerts (None when there are no rules) and their webhook, if any; with
    ``monitor``, rules may also use its drift metrics."""
    rules = read_alert_rules(settings.alert_rules)
    if not rules:
        return None, None
    webhook = None
    if settings.alert_webhook_url is not None:
        webhook = WebhookSender(
            settings.alert_webhook_url,
            secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
            timeout_s=settings.webhook_timeout_seconds,
        )
    interval = settings.alert_interval_seconds
    retention = max(rule.window_seconds for rule in rules) + 2 * interval
    sources: list[AlertSource] = [MetricsAlertSource(metrics, retention_s=retention)]
    if monitor is not None:
        sources.append(DriftAlertSource(monitor))
    if concept is not None:
        sources.append(ConceptAlertSource(concept))
    evaluator = AlertEvaluator(rules, sources, alert_sink(webhook), interval_s=interval)
    return evaluator, webhook


def build_token_issuer(settings: Settings) -> TokenIssuer | None:
    """modelgate's own token issuer (client credentials), when it has a signing key."""
    if settings.jwt_signing_key is None:
        return None
    if settings.jwt_issuer is None:
        raise ValueError("MODELGATE_JWT_SIGNING_KEY needs MODELGATE_JWT_ISSUER")
    from modelgate.identity.jwt import TokenIssuer

    return TokenIssuer(
        settings.jwt_signing_key.get_secret_value(),
        kid=settings.jwt_signing_kid,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_s=settings.jwt_token_ttl_seconds,
    )


def build_token_verifier(settings: Settings, issuer: TokenIssuer | None) -> TokenVerifier | None:
    """JWT bearer tokens, when an issuer is configured (its own tokens included)."""
    if settings.jwt_issuer is None:
        return None
    from modelgate.identity.jwt import JwtVerifier
    from modelgate.identity.tokens import JwtTokenVerifier, parse_operator_claim

    lifetime = settings.jwt_max_token_lifetime_seconds
    keys = dict(settings.jwt_public_keys)
    if issuer is not None:
        if issuer.ttl_s > lifetime:
            raise ValueError(
                "MODELGATE_JWT_TOKEN_TTL_SECONDS exceeds MODELGATE_JWT_MAX_TOKEN_LIFETIME_SECONDS"
            )
        keys[issuer.kid] = issuer.public_key_pem
    verifier = JwtVerifier(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        public_keys=keys or None,
        jwks_url=settings.jwt_jwks_url,
        max_lifetime_s=lifetime,
    )
    operator = settings.jwt_operator_claim
    return JwtTokenVerifier(
        verifier,
        tenant_claim=settings.jwt_tenant_claim,
        own_kid=issuer.kid if issuer is not None else None,
        operator_claim=parse_operator_claim(operator) if operator else None,
    )


def build_state(settings: Settings) -> State:
    url = database_url_for(
        settings.data_dir,
        settings.database_url.get_secret_value() if settings.database_url else None,
    )
    engine = create_engine(url)
    identity, audit, usage = SqlIdentityStore(engine), SqlAuditLog(engine), SqlUsageStore(engine)
    tenancy = TenancyService(identity, audit)
    payloads = SqlPayloadStore(engine)
    cipher, pseudonymize = build_payload_crypto(settings)
    feedback = SqlFeedbackStore(engine)
    subjects = FeedbackSubjects(feedback)  # erased and exported with the payload logs
    payload_service = PrivacyService(
        payloads, audit, identity, cipher=cipher, pseudonymize=pseudonymize, holders=[subjects]
    )
    return State(
        url, engine, identity, audit, tenancy, usage, UsageService(usage, audit),
        payloads, payload_service, feedback, FeedbackService(feedback), subjects,
    )  # fmt: skip


def build_payload_crypto(
    settings: Settings,
) -> tuple[AesGcmCipher | None, Callable[[str], str] | None]:
    """The cipher that seals logged payloads and the subject pseudonymizer (None: not
    configured, so nothing is logged)."""
    key = settings.payload_pseudonym_key
    if settings.payload_keys and key is None:
        raise ValueError("MODELGATE_PAYLOAD_KEYS needs MODELGATE_PAYLOAD_PSEUDONYM_KEY")
    pseudonymize = None
    if key is not None:
        secret = key.get_secret_value().encode()
        if len(secret) < 16:
            raise ValueError("MODELGATE_PAYLOAD_PSEUDONYM_KEY must be at least 16 bytes")
        pseudonymize = functools.partial(pseudonym, secret)
    if not settings.payload_keys:
        return None, pseudonymize
    encoded = {k: v.get_secret_value() for k, v in settings.payload_keys.items()}
    return AesGcmCipher.from_settings(encoded, settings.payload_active_key), pseudonymize


def build_payload_logger(settings: Settings, state: State) -> PayloadLogger | None:
    """The listener that logs consented payloads, when encryption keys are configured."""
    service = state.payload_service
    cipher, pseudonymize = service.cipher, service.pseudonymize
    if cipher is None or pseudonymize is None:
        return None
    logger = PayloadLogger(
        state.payloads,
        cipher,
        pseudonymize,
        flush_interval_s=settings.payload_flush_seconds,
        max_pending=settings.payload_max_pending,
        max_bytes=settings.payload_max_bytes,
        max_pending_bytes=settings.payload_max_pending_bytes,
        consent_refresh_s=settings.payload_consent_refresh_seconds,
        purge_interval_s=settings.payload_purge_seconds,
    )
    service.attach(logger.apply, logger.flush)
    return logger


def build_feedback(
    settings: Settings, state: State, registry: ModelRegistry
) -> tuple[FeedbackRecorder, ConceptMonitor]:
    """The listener that records predictions for feedback (subjects as pseudonyms when
    the payload pseudonym key is set), wired to the feedback service and the subject
    holder, and the concept-drift monitor reading the labelled ones."""
    recorder = FeedbackRecorder(
        state.feedback,
        pseudonymize=state.payload_service.pseudonymize,
        flush_interval_s=settings.feedback_flush_seconds,
        max_pending=settings.feedback_max_pending,
        max_request_rows=settings.feedback_max_request_rows,
        purge_interval_s=settings.feedback_purge_seconds,
    )
    state.feedback_service.recorder = recorder
    state.feedback_service.wait_s = settings.feedback_wait_seconds
    state.feedback_subjects.recorder = recorder
    concept = ConceptMonitor(
        state.feedback,
        registry,
        window_labels=settings.feedback_window_labels,
        window_s=settings.feedback_window_seconds,
        min_labels=settings.feedback_min_labels,
        flush=recorder.flush,
    )
    return recorder, concept


def build_deployments(
    settings: Settings, state: State, registry: ModelRegistry, metrics: PrometheusMetrics
) -> tuple[DeploymentService, ShadowRunner]:
    """Deployments read from the database (every replica follows them), and the runner of
    their shadow copies."""

    async def versions(model: str) -> set[int]:
        sources = await asyncio.to_thread(registry.repository.versions, model)
        return {source.version for source in sources}

    observer = PrometheusDeploymentMetrics(metrics.registry)
    service = DeploymentService(
        SqlDeploymentStore(state.engine),
        state.audit,
        DeploymentRouter(),
        versions,
        observer=observer,
        refresh_s=settings.deployment_refresh_seconds,
        windows=build_canary_windows(settings),
    )
    shadows = ShadowRunner(registry, observer, max_pending=settings.shadow_max_pending)
    return service, shadows


def build_announcer(settings: Settings, registry: ModelRegistry) -> NodeAnnouncer | None:
    if settings.role != "node":
        return None
    from modelgate.cluster import setup

    return setup.build_announcer(settings, registry)


def build_components(settings: Settings) -> Components:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = PrometheusMetrics()
    anomalies = AnomalyDetector(metrics)
    cache = build_cache(settings, metrics)
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
        from modelgate.cluster.setup import build_cluster
        from modelgate.core.gateway.remote import ClusterRepository, remote_builder

        cluster = build_cluster(settings, metrics, tracer)
        registry = ModelRegistry(
            ClusterRepository(cluster),
            {},
            observer=metrics,
            policy=policy,
            builder=remote_builder(cluster, metrics),
        )
    else:
        registry = ModelRegistry(
            FileModelRepository(str(settings.model_repository)),
            loaders(),
            observer=metrics,
            executor=executor,
            policy=policy,
            load_hooks=[anomalies.prepare] + ([cache.prepare] if cache is not None else []),
        )
    state = build_state(settings)
    usage = state.usage

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
    deployments, shadows = build_deployments(settings, state, registry, metrics)
    listeners: list[InferenceListener] = [monitor, feedback]
    if payload_logger is not None:
        listeners.append(payload_logger)
    service = InferenceService(
        registry,
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
        audit=state.audit,
    )
    records: list[tuple[str, RecordKeeper]] = [("feedback", feedback)]  # rows, by reason
    if payload_logger is not None:
        records.append(("payloads", payload_logger))
    metrics.track(registry=registry, admission=admission, usage=recorder, records=records)
    alerts, alert_webhook = build_alerts(settings, metrics, monitor, concept)
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
    rest_app = RestApp(
        service,
        OpenAIHandlers(service, embeddings),
        metrics,
        RestLimits(
            max_body_bytes=settings.max_body_bytes,
            max_elements=settings.max_elements,
            admin_max_body_bytes=settings.admin_max_body_bytes,
        ),
        authenticator,
        admin_app=build_admin_app(
            state.tenancy,
            admin_authenticator,
            usage=state.usage_service,
            currency=settings.currency,
            abuse=abuse,
            quotas=quotas,
            payloads=state.payload_service,
            monitoring=(service, monitor),
            concept=concept,
            deployments=(deployments, shadows),
            # answers holding a new key's secret are kept only sealed with the payload cipher
            idempotency=IdempotencyService(
                SqlIdempotencyStore(state.engine),
                state.payload_service.cipher,
                pseudonymize=state.payload_service.pseudonymize,  # subjects' ids in paths
            ),
        ),
        metrics_authenticator=admin_authenticator if settings.metrics_auth else None,
        tokens=TokenService(admin_authenticator, issuer) if issuer is not None else None,
        jwks=issuer.jwks() if issuer is not None else None,
        abuse=abuse,
        tracer=tracer,
        requests=requests,
        feedback=state.feedback_service,
        jobs=JobRoutes(
            jobs.service,
            max_body_bytes=min(settings.max_body_bytes, settings.jobs_max_bytes),
            max_elements=settings.max_elements,
        ),
        admin_authenticator=admin_authenticator,
    )
    return Components(
        settings,
        registry,
        service,
        embeddings,
        metrics,
        rest_app,
        executor,
        state,
        authenticator,
        abuse=abuse,
        usage=recorder,
        webhook=webhook,
        alerts=alerts,
        alert_webhook=alert_webhook,
        payloads=payload_logger,
        monitor=monitor,
        tracer=tracer,
        requests=requests,
        feedback=feedback,
        cluster=cluster,
        announcer=build_announcer(settings, registry),
        jobs=jobs,
        deployments=deployments,
        shadows=shadows,
    )
