"""The one place that picks implementations from settings and wires the core to them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from modelgate.api.openai.embeddings import OpenAIHandlers
from modelgate.api.rest.app import RestApp, RestLimits
from modelgate.core.embeddings import EmbeddingService
from modelgate.core.inference import InferenceService
from modelgate.core.registry import ModelRegistry, RegistryPolicy
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.repository.filesystem import FileModelRepository
from modelgate.runtimes.catalog import loaders
from modelgate.settings import Settings

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
    service = InferenceService(registry)
    embeddings = EmbeddingService(service)
    rest_app = RestApp(
        service,
        OpenAIHandlers(service, embeddings),
        metrics,
        RestLimits(max_body_bytes=settings.max_body_bytes, max_elements=settings.max_elements),
    )
    return Components(settings, registry, service, embeddings, metrics, rest_app, executor)
