"""Deployments from settings: pinned versions, splits and canaries read from the database
(every replica follows them), their canary windows (shared in Redis when replicas are),
their fairness gates (a fairness audit of the canary's labelled predictions), and the
runner of shadow copies."""

from __future__ import annotations

import asyncio

from modelgate.boot.state import State
from modelgate.boot.stores import build_canary_windows
from modelgate.core.monitoring.fairness import FairnessAuditor
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.core.traffic.routing import DeploymentRouter
from modelgate.core.traffic.shadow import ShadowRunner
from modelgate.fairness.canary_gate import AuditedCanaryFairness
from modelgate.observability.deployment_metrics import PrometheusDeploymentMetrics
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.settings import Settings
from modelgate.storage.sql.deployments import SqlDeploymentStore

__all__ = ["build_deployments"]


def build_deployments(
    settings: Settings,
    state: State,
    registry: ModelRegistry,
    metrics: PrometheusMetrics,
    fairness: FairnessAuditor | None = None,
) -> tuple[DeploymentService, ShadowRunner]:
    """Deployments read from the database (every replica follows them), and the runner of
    their shadow copies; with ``fairness``, canaries of models that set ``fairness.gates``
    are held to them."""

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
        fairness=AuditedCanaryFairness(fairness) if fairness is not None else None,
        fairness_interval_s=settings.fairness_gate_interval_seconds,
    )
    shadows = ShadowRunner(registry, observer, max_pending=settings.shadow_max_pending)
    return service, shadows
