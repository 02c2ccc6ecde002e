"""The metrics that are state rather than events, read when ``/metrics`` is scraped: models
loaded and their states and sizes, requests in flight, degraded shared stores, the usage
backlog, what the background recorders hold and did not keep, and the connections waiting
in the HTTP listener's accept queue. Their names are listed
with the others in :mod:`modelgate.observability.metrics`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from modelgate.core.admission.admission import Admission
    from modelgate.core.admission.backpressure import RefusalBackpressure
    from modelgate.core.admission.fairness import TenantShares
    from modelgate.core.admission.metering import UsageRecorder
    from modelgate.core.serving.registry import ModelRegistry
    from modelgate.observability.metrics import RecordKeeper

__all__ = ["StateCollector"]

_STATES = ("READY", "LOADING", "UNLOADING", "UNAVAILABLE")
#: the tenants whose shares are exported: the largest, so the label stays bounded
_SHARE_TENANTS = 100


class StateCollector:
    """Reads what :meth:`~modelgate.observability.metrics.PrometheusMetrics.track` was given,
    at each scrape."""

    def __init__(self) -> None:
        self.registry: ModelRegistry | None = None
        self.admission: Admission | None = None
        self.usage: UsageRecorder | None = None
        self.records: tuple[tuple[str, RecordKeeper], ...] = ()
        self.backpressure: RefusalBackpressure | None = None
        #: the HTTP listener's accept queue: (waiting, bound), None when unknown
        self.accept_queue: Callable[[], tuple[int, int] | None] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.accept_queue is not None:
            yield from _accept_queue(self.accept_queue())
        if self.registry is not None:
            yield from self._models(self.registry)
        admission = self.admission
        if admission is not None:
            yield GaugeMetricFamily(
                "modelgate_inflight_requests", "Inference requests running", admission.inflight
            )
            if admission.max_inflight is not None:
                yield GaugeMetricFamily(
                    "modelgate_max_inflight_requests",
                    "Inference requests that may run before the lowest priority is shed",
                    admission.max_inflight,
                )
            degraded = GaugeMetricFamily(
                "modelgate_store_degraded",
                "1 while a shared store is unreachable and its fallback answers",
                labels=("store",),
            )
            stores: list[tuple[str, object]] = [("rate_limiter", admission.limiter)]
            if admission.quotas is not None:
                stores.append(("quota_counter", admission.quotas.counter))
            for name, store in stores:
                # the Fallback* stores say so; a store in memory is never degraded
                degraded.add_metric((name,), 1 if getattr(store, "degraded", False) else 0)
            yield degraded
            if admission.overload is not None:
                yield from _shares(admission.overload.shares)
        if self.backpressure is not None:
            yield from _holds(self.backpressure)
        if self.usage is not None:
            yield GaugeMetricFamily(
                "modelgate_usage_pending_groups",
                "Usage sums waiting to be written",
                self.usage.pending,
            )
            yield CounterMetricFamily(
                "modelgate_usage_dropped_requests",
                "Requests whose usage was lost (backlog full, or refused by the store)",
                self.usage.dropped,
            )
        if self.records:
            pending = GaugeMetricFamily(
                "modelgate_records_pending_rows",
                "Rows a recorder holds, not written yet",
                labels=("recorder",),
            )
            not_kept = CounterMetricFamily(
                "modelgate_records_not_kept_rows",
                "Rows a recorder did not keep, by reason",
                labels=("recorder", "reason"),
            )
            for name, keeper in self.records:
                pending.add_metric((name,), keeper.pending)
                for reason, rows in sorted(keeper.not_kept().items()):
                    not_kept.add_metric((name, reason), rows)
            yield pending
            yield not_kept

    @staticmethod
    def _models(registry: ModelRegistry) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "modelgate_model_state",
            "1 for the current state of each model version",
            labels=("model", "version", "state"),
        )
        models: dict[str, None] = {}  # models with a version loaded, in order
        for row in registry.index():
            version = row.get("version", "")
            if version:
                models[row["name"]] = None
            for name in _STATES:
                state.add_metric((row["name"], version, name), 1 if row["state"] == name else 0)
        yield state
        artifacts = GaugeMetricFamily(
            "modelgate_model_artifact_bytes",
            "Bytes of a loaded version's files (the memory budget's estimate)",
            labels=("model", "version"),
        )
        for model in models:
            for each in registry.versions(model):
                artifacts.add_metric((model, str(each.version)), each.size_bytes)
        yield artifacts
        yield GaugeMetricFamily(
            "modelgate_models_loaded_bytes",
            "Bytes of every loaded version's files",
            registry.memory_bytes(),
        )
        budget = registry.policy.memory_budget_bytes
        if budget is not None:
            yield GaugeMetricFamily(
                "modelgate_models_memory_budget_bytes",
                "Loaded artifacts beyond this are unloaded, least recently used first",
                budget,
            )


def _shares(shares: TenantShares) -> Iterator[Metric]:
    """Each tenant's share of recent admissions beside its weighted fair share: a tenant
    far over its fair share is the one shed first when the queueing delay passes its
    target."""
    current, fair = shares.shares(), shares.fair_shares()
    admitted = GaugeMetricFamily(
        "modelgate_tenant_admission_share",
        "A tenant's share of recent admissions (queue-delay shedding on)",
        labels=("tenant",),
    )
    fair_share = GaugeMetricFamily(
        "modelgate_tenant_fair_share",
        "A tenant's weighted fair share of admissions under saturation",
        labels=("tenant",),
    )
    for tenant in sorted(current, key=current.__getitem__, reverse=True)[:_SHARE_TENANTS]:
        admitted.add_metric((tenant,), current[tenant])
        fair_share.add_metric((tenant,), fair[tenant])
    yield admitted
    yield fair_share


def _holds(backpressure: RefusalBackpressure) -> Iterator[Metric]:
    """Back-pressure on flooding connections (docs/access-control.md, "What a flooding
    client sees")."""
    yield GaugeMetricFamily(
        "modelgate_refusals_holding",
        "Refusals held now before they are answered",
        backpressure.held,
    )
    yield CounterMetricFamily(
        "modelgate_refusals_held",
        "Refusals held before they were answered (a connection past its burst of refusals)",
        backpressure.holds_total,
    )
    yield CounterMetricFamily(
        "modelgate_refusals_closed",
        "Refusals answered at once with the connection closed: as many as allowed were held",
        backpressure.closes_total,
    )


def _accept_queue(queue: tuple[int, int] | None) -> Iterator[Metric]:
    if queue is None:
        return
    waiting, bound = queue
    yield GaugeMetricFamily(
        "modelgate_http_accept_queue_connections",
        "Connections the kernel has accepted on the HTTP port and the server has not yet "
        "(they wait before any request of theirs is read)",
        waiting,
    )
    yield GaugeMetricFamily(
        "modelgate_http_accept_queue_limit_connections",
        "The most connections the HTTP port's accept queue holds (the listen backlog)",
        bound,
    )
