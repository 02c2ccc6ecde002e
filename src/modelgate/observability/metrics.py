"""Prometheus metrics. One registry per server process; label children are cached per model
version so that recording on the request path is a dictionary lookup and an add.

Metric names (all prefixed ``modelgate_``):

- ``inference_requests_total{model,version,status}``: requests by outcome
- ``inference_request_duration_seconds{model,version}``: end-to-end latency in the core
- ``inference_queue_depth{model,version}``: requests waiting in the batcher
- ``inference_batch_size{model,version}``: rows per runtime call
- ``inference_batch_duration_seconds{model,version}``: time of one runtime call
- ``model_loaded{model,version}``: 1 while a version is loaded
- ``models_loaded``: number of loaded model versions
- ``http_requests_total{api,status}``: every HTTP answer, including those that never
  reached a model (bad JSON, unknown model)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "PrometheusMetrics"]

_LATENCY = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _VersionMetrics:
    __slots__ = (
        "_batch_seconds",
        "_batch_size",
        "_counters",
        "_labels",
        "_latency",
        "_queue",
        "_requests",
    )

    def __init__(self, owner: PrometheusMetrics, model: str, version: str):
        self._requests = owner.requests
        self._counters: dict[str, Counter] = {}
        self._latency = owner.latency.labels(model, version)
        self._queue = owner.queue_depth.labels(model, version)
        self._batch_size = owner.batch_size.labels(model, version)
        self._batch_seconds = owner.batch_seconds.labels(model, version)
        self._labels = (model, version)

    def request(self, status: str, seconds: float) -> None:
        counter = self._counters.get(status)
        if counter is None:
            counter = self._counters[status] = self._requests.labels(*self._labels, status)
        counter.inc()
        self._latency.observe(seconds)

    def batch(self, size: int, compute_ns: int) -> None:
        self._batch_size.observe(size)
        self._batch_seconds.observe(compute_ns / 1e9)

    def queue(self, depth: int) -> None:
        self._queue.set(depth)


class PrometheusMetrics:
    """The :class:`~modelgate.core.ports.InferenceObserver` backed by prometheus-client."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        labels = ("model", "version")
        self.requests = Counter(
            "modelgate_inference_requests",
            "Inference requests by outcome",
            (*labels, "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelgate_inference_request_duration_seconds",
            "Inference latency in the core",
            labels,
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "modelgate_inference_queue_depth",
            "Requests waiting in the batcher",
            labels,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelgate_inference_batch_size",
            "Rows per runtime call",
            labels,
            buckets=_BATCH,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "modelgate_inference_batch_duration_seconds",
            "Time of one runtime call",
            labels,
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.loaded_versions = Gauge(
            "modelgate_model_loaded", "1 while a version is loaded", labels, registry=self.registry
        )
        self.models_loaded = Gauge(
            "modelgate_models_loaded", "Loaded model versions", registry=self.registry
        )
        self.http = Counter(
            "modelgate_http_requests",
            "HTTP answers by API and status",
            ("api", "status"),
            registry=self.registry,
        )
        self._http_children: dict[tuple[str, int], Counter] = {}

    def version(self, model: str, version: str) -> _VersionMetrics:
        return _VersionMetrics(self, model, version)

    def loaded(self, model: str, version: str, loaded: bool) -> None:
        self.loaded_versions.labels(model, version).set(1 if loaded else 0)
        if loaded:
            self.models_loaded.inc()
        else:
            self.models_loaded.dec()

    def http_answer(self, api: str, status: int) -> None:
        key = (api, status)
        child = self._http_children.get(key)
        if child is None:
            child = self._http_children[key] = self.http.labels(api, str(status))
        child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
