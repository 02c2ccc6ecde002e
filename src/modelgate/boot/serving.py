"""The composition root's protocol adapters: what a server serves, built around the core
components of :func:`~modelgate.boot.components.build_core_components`.

:func:`build_components` adds the REST app (OIP, OpenAI, jobs, admin, OAuth);
:func:`build_grpc_server` builds the gRPC server (``grpc`` is imported only then).
:mod:`modelgate.server` runs them: sockets and ports, uvicorn, signals.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from modelgate.api.admin.app import build_admin_app
from modelgate.api.admin.rate_limits import AdminRateLimits
from modelgate.api.openai.embeddings import OpenAIHandlers
from modelgate.api.rest.app import RestApp, RestLimits
from modelgate.api.rest.jobs import JobRoutes
from modelgate.boot.components import Components, build_core_components
from modelgate.boot.learning import build_learning
from modelgate.boot.loop_lag import LoopLag
from modelgate.core.access.oauth import TokenService
from modelgate.core.admission.backpressure import RefusalBackpressure
from modelgate.core.admission.idempotency import IdempotencyService
from modelgate.core.monitoring.fairness import FairnessAuditor
from modelgate.fairness.audit_cache import FairnessAuditCache
from modelgate.fairness.fairlearn_metrics import FairlearnMetrics
from modelgate.settings import Settings
from modelgate.storage.sql.idempotency import SqlIdempotencyStore

__all__ = ["build_backpressure", "build_components", "build_grpc_server", "build_rest_app"]


def build_components(settings: Settings) -> Components:
    """A server's components: the core's, and the REST app over them."""
    components = build_core_components(settings)
    components.backpressure = build_backpressure(settings)
    if components.backpressure is not None:
        components.metrics.track_backpressure(components.backpressure)
    components.learning = build_learning(settings, components)
    components.rest_app = build_rest_app(settings, components)
    overload = components.service.admission.overload if components.service.admission else None
    if overload is not None:  # sampled in the serving process only, not in a job worker
        components.loop_lag = LoopLag(overload)
    return components


def build_backpressure(settings: Settings) -> RefusalBackpressure | None:
    """What REST and gRPC hold a flooding connection's refusals with (None: off)."""
    if settings.refusal_burst == 0:
        return None
    return RefusalBackpressure(
        burst=settings.refusal_burst,
        max_hold_s=settings.refusal_hold_seconds,
        max_held=settings.refusal_max_held,
        spread=settings.refusal_hold_spread,
    )


def build_rest_app(settings: Settings, components: Components) -> RestApp:
    state, service = components.state, components.service
    admin_authenticator, issuer = components.admin_authenticator, components.issuer
    monitor, deployments, jobs = components.monitor, components.deployments, components.jobs
    # build_core_components always builds these
    assert monitor is not None
    assert deployments is not None
    assert jobs is not None
    admission = service.admission
    assert admission is not None  # build_core_components always builds it
    # the inference path's limiter: with Redis, the limits hold across replicas. Requests
    # are counted by the REST app before their body is read; audits by the admin app
    admin_limits = AdminRateLimits(
        admission.limiter,
        requests_per_second=settings.admin_rate_limit,
        burst=settings.admin_rate_burst,
        audits_per_minute=settings.fairness_audits_per_minute,
    )
    return RestApp(
        service,
        OpenAIHandlers(service, components.embeddings),
        components.metrics,
        RestLimits(
            max_body_bytes=settings.max_body_bytes,
            max_elements=settings.max_elements,
            admin_max_body_bytes=settings.admin_max_body_bytes,
        ),
        components.authenticator,
        admin_app=build_admin_app(
            state.tenancy,
            admin_authenticator,
            usage=state.usage_service,
            currency=settings.currency,
            abuse=components.abuse,
            quotas=components.quotas,
            payloads=state.payload_service,
            monitoring=(service.catalog, monitor),
            concept=components.concept,
            fairness=FairnessAuditCache(
                FairnessAuditor(
                    state.feedback_service.store,
                    service.catalog,
                    FairlearnMetrics(),  # imports Fairlearn on the first audit only
                    max_rows=settings.fairness_max_rows,
                    window=timedelta(seconds=settings.fairness_window_seconds),
                ),
                ttl_s=settings.fairness_cache_seconds,
            ),
            deployments=(deployments, components.shadows),
            learning=components.learning,
            traffic=components.metrics,
            rate_limits=admin_limits,
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
        abuse=components.abuse,
        tracer=components.tracer,
        requests=components.requests,
        feedback=state.feedback_service,
        jobs=JobRoutes(
            jobs.service,
            max_body_bytes=min(settings.max_body_bytes, settings.jobs_max_bytes),
            max_elements=settings.max_elements,
        ),
        admin_authenticator=admin_authenticator,
        backpressure=components.backpressure,
        admin_rate_limits=admin_limits,
    )


def build_grpc_server(settings: Settings, components: Components, *, reuse_port: bool) -> Any:
    """The gRPC server over the core, not bound nor started (``grpc`` is imported only
    here, when serving)."""
    from modelgate.api.grpc.build import GrpcConnectionLimits, create_grpc_server

    return create_grpc_server(
        components.service,
        max_message_bytes=settings.grpc_max_message_bytes,
        max_elements=settings.max_elements,
        authenticator=components.authenticator,
        abuse=components.abuse,
        reuse_port=reuse_port,
        limits=GrpcConnectionLimits(
            max_metadata_bytes=settings.grpc_max_metadata_bytes,
            max_connection_idle_s=settings.grpc_max_connection_idle_seconds,
            max_concurrent_streams=settings.grpc_max_concurrent_streams,
            max_connections=settings.grpc_max_connections,
            handshake_timeout_s=settings.grpc_handshake_timeout_seconds,
        ),
        forwarded_allow_ips=settings.forwarded_allow_ips,
        tracer=components.tracer,
        requests=components.requests,
        backpressure=components.backpressure,
        reflection=settings.grpc_reflection,
    )
