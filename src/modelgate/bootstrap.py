"""The one place that picks implementations from settings and wires the core to them.

``build_components`` only constructs (no I/O); ``Components.start`` does the start-up I/O:
database migrations, then loading and warming the preload models.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.api.admin.app import build_admin_app
from modelgate.api.openai.embeddings import OpenAIHandlers
from modelgate.api.rest.app import RestApp, RestLimits
from modelgate.core.admission import Admission
from modelgate.core.authentication import Authenticator, TokenVerifier
from modelgate.core.embeddings import EmbeddingService
from modelgate.core.inference import InferenceService
from modelgate.core.limits import RateLimiter
from modelgate.core.oauth import TokenService
from modelgate.core.registry import ModelRegistry, RegistryPolicy
from modelgate.core.tenancy import TenancyService
from modelgate.limits.memory import MemoryRateLimiter
from modelgate.limits.resilient import FallbackRateLimiter
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.repository.filesystem import FileModelRepository
from modelgate.runtimes.catalog import loaders
from modelgate.settings import Settings
from modelgate.storage.sql.audit import SqlAuditLog
from modelgate.storage.sql.engine import create_engine, database_url_for, migrate
from modelgate.storage.sql.identity import SqlIdentityStore

if TYPE_CHECKING:
    from modelgate.identity.jwt import TokenIssuer

__all__ = ["Components", "build_components"]


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

    async def open(self) -> None:
        """Start-up I/O that must finish before any request is accepted: migrations."""
        if self.state is not None:
            await migrate(self.state.url)

    async def start(self) -> None:
        """Load and warm the preload models (the server is live, not yet ready)."""
        await self.registry.start()

    async def close(self) -> None:
        await self.registry.close()
        if self.service.admission is not None:
            await self.service.admission.limiter.close()
        if self.state is not None:
            await self.state.engine.dispose()
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class State:
    """The database behind tenants, keys and the audit trail."""

    url: str
    engine: AsyncEngine
    identity: SqlIdentityStore
    audit: SqlAuditLog
    tenancy: TenancyService


def build_limiter(settings: Settings) -> RateLimiter:
    """In memory for one process; Redis (with a fallback for outages) when shared."""
    if settings.redis_url is None:
        return MemoryRateLimiter()
    from modelgate.limits.redis import RedisRateLimiter, create_redis_client

    timeout = settings.redis_timeout_seconds
    client = create_redis_client(
        settings.redis_url.get_secret_value(), connect_timeout_s=timeout, read_timeout_s=timeout
    )
    return FallbackRateLimiter(
        RedisRateLimiter(client, prefix=f"{settings.redis_key_prefix}rl:"),
        MemoryRateLimiter(),
        settings.limiter_failure_mode,
        local_share=settings.limiter_local_share,
    )


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
    from modelgate.identity.tokens import JwtTokenVerifier

    keys = dict(settings.jwt_public_keys)
    if issuer is not None:
        keys[issuer.kid] = issuer.public_key_pem
    verifier = JwtVerifier(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        public_keys=keys or None,
        jwks_url=settings.jwt_jwks_url,
    )
    return JwtTokenVerifier(verifier, tenant_claim=settings.jwt_tenant_claim)


def build_state(settings: Settings) -> State:
    url = database_url_for(
        settings.data_dir,
        settings.database_url.get_secret_value() if settings.database_url else None,
    )
    engine = create_engine(url)
    identity, audit = SqlIdentityStore(engine), SqlAuditLog(engine)
    return State(url, engine, identity, audit, TenancyService(identity, audit))


def build_components(settings: Settings) -> Components:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = PrometheusMetrics()
    executor = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="modelgate-model")
    budget = settings.memory_budget_mb
    registry = ModelRegistry(
        FileModelRepository(str(settings.model_repository)),
        loaders(),
        observer=metrics,
        executor=executor,
        policy=RegistryPolicy(
            inline_threshold_s=settings.inline_threshold_ms / 1000,
            idle_unload_s=settings.idle_unload_seconds,
            memory_budget_bytes=budget * 1024 * 1024 if budget is not None else None,
            drain_timeout_s=settings.drain_timeout_seconds,
        ),
    )
    limiter = build_limiter(settings)
    service = InferenceService(registry, admission=Admission(limiter))
    embeddings = EmbeddingService(service)
    state = build_state(settings)
    # The admin API always authenticates; inference routes only with MODELGATE_AUTH=required.
    issuer = build_token_issuer(settings)
    admin_authenticator = Authenticator(
        state.identity,
        admin_key=settings.admin_key.get_secret_value() if settings.admin_key else None,
        tokens=build_token_verifier(settings, issuer),
        cache_ttl_s=settings.key_cache_seconds,
    )
    authenticator = admin_authenticator if settings.auth == "required" else None
    rest_app = RestApp(
        service,
        OpenAIHandlers(service, embeddings),
        metrics,
        RestLimits(max_body_bytes=settings.max_body_bytes, max_elements=settings.max_elements),
        authenticator,
        admin_app=build_admin_app(state.tenancy, admin_authenticator),
        metrics_authenticator=admin_authenticator if settings.metrics_auth else None,
        tokens=TokenService(admin_authenticator, issuer) if issuer is not None else None,
        jwks=issuer.jwks() if issuer is not None else None,
    )
    return Components(
        settings, registry, service, embeddings, metrics, rest_app, executor, state, authenticator
    )
