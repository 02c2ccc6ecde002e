"""Prometheus metrics. One registry per server process.

Recording on the request path is a dictionary lookup and a few adds: label children are
cached per model version (batches, queue) and per (model, version, tenant) (requests).
The counters bumped on every request (requests by outcome, usage rows and tokens, HTTP
answers, anomalous requests) are counted in plain integers and added to their
prometheus-client children when they are read (:mod:`modelgate.observability.tallies`):
exact at every read, and a request no longer pays prometheus-client's lock per counter.
The histograms observed on every request or batch (request latency, batch size and time)
are kept in plain bucket counts and sums and exported from them at each read, with the
samples and values prometheus-client's ``Histogram`` would give (:class:`.TalliedHistogram`).
What is state rather than events (models loaded, requests in flight, the usage backlog,
degraded stores) is read when ``/metrics`` is scraped, at no cost per request
(:mod:`modelgate.observability.state_metrics`).

Metric names (all prefixed ``modelgate_``), with their labels:

- ``inference_requests_total{model,version,tenant,status}``: requests by outcome; status
  is ``success``, ``cancelled`` or an error kind (``invalid_argument``, ``rate_limited``,
  ``overloaded``, ``unavailable``, ``internal``, ...)
- ``inference_request_duration_seconds{model,version,tenant}``: end-to-end latency in
  the core, every outcome
- ``inference_queue_depth{model,version}``: requests waiting in the batcher
- ``inference_batch_size{model,version}``: rows per runtime call
- ``inference_batch_duration_seconds{model,version}``: time of one runtime call
- ``usage_rows_total{model,tenant}``, ``usage_tokens_total{model,tenant}``: what
  successful requests used (the units usage is metered and priced in)
- ``refused_requests_total{tenant,reason}``: admission refusals; reason is ``batch_size``,
  ``concurrency``, ``tenant_rate_limit``, ``key_rate_limit``, ``model_rate_limit``,
  ``quota_<unit>_per_<period>`` or ``queue_delay`` (shed on queueing delay)
- ``shed_requests_total{priority}``: requests shed for overload, by plan priority
  (``none``: no plan)
- ``queue_shed_requests_total{priority}``: requests shed before they were read because
  the queueing delay (the event loop's lag) stayed over ``MODELGATE_SHED_QUEUE_TARGET_MS``
  (and, by tenant, ``refused_requests_total{tenant,reason="queue_delay"}``), or because
  the request alone waited past ``MODELGATE_SHED_QUEUE_MAX_WAIT_MS`` or its client's
  deadline (priority ``none``)
- ``abandoned_requests_total{api}``: requests dropped unanswered, with no work done,
  because their client had disconnected before they were read or run
- ``tenant_admission_share{tenant}``, ``tenant_fair_share{tenant}``: with queue-delay
  shedding on, each tenant's share of recent admissions and its weighted fair share (the
  100 largest shares), read at scrape time
- ``refusals_holding``, ``refusals_held_total``, ``refusals_closed_total``: refusals held
  on flooding connections now and since start, and those answered at once with the
  connection closed because ``MODELGATE_REFUSAL_MAX_HELD`` were held
- ``explained_rows_total{model,method}``: rows explained (``parameters.explain``,
  docs/explanations.md), by method (``linear``, ``kernel_shap``)
- ``abuse_blocks_total{kind}``: keys and client addresses blocked by abuse throttling
- ``inflight_requests``, ``max_inflight_requests``: inference requests running, and the cap
- ``http_accept_queue_connections``, ``http_accept_queue_limit_connections``: connections
  waiting in the HTTP listener's accept queue (the kernel completed their handshake, the
  server has not accepted them), and the most it holds; read at scrape time (Linux)
- ``store_degraded{store}``: 1 while a shared store (``rate_limiter``, ``quota_counter``)
  is unreachable and its fallback answers
- ``usage_pending_groups``: usage sums waiting to be written;
  ``usage_dropped_requests_total``: requests whose usage was lost
- ``records_pending_rows{recorder}``: rows the feedback recorder (``feedback``) and the
  payload logger (``payloads``) hold, not written yet;
  ``records_not_kept_rows_total{recorder,reason}``: rows they did not keep, by reason
  (``withheld_consent``, ``request_rows_cap``, ``too_large``, ``backlog_full``,
  ``unreadable``, ``refused``)
- ``model_loaded{model,version}``: 1 while a version is loaded; ``models_loaded``: how many
- ``model_state{model,version,state}``: 1 for each model's current state (``READY``,
  ``LOADING``, ``UNLOADING``, ``UNAVAILABLE``; version is empty for a model with none loaded)
- ``model_artifact_bytes{model,version}``: size of a loaded version's files (the memory
  estimate of the budget); ``models_loaded_bytes``: their sum;
  ``models_memory_budget_bytes``: the budget, when one is set
- ``cache_hits_total{model}``, ``cache_misses_total{model}``: lookups of the result cache
  (models with a ``cache`` section); the hit ratio is hits / (hits + misses);
  ``cache_stale_total{model}``: expired entries served for a failing model;
  ``cache_stores_total{model}``, ``cache_evictions_total{model}``: entries written, and
  entries the in-process store dropped to stay within its bounds
- ``http_requests_total{api,status}``: every HTTP answer, including those that never
  reached a model (bad JSON, unknown model)

A node (and an all-in-one server) also exports its hardware use, CPU, memory and GPUs
(``process_cpu_seconds_total``, ``gpu_utilization_percent{gpu}``, ...), read at each scrape
by :mod:`modelgate.observability.hardware`: absent where there is no GPU, never zero.

Deployments and shadow comparisons (``deployment_weight_percent``, ``shadow_*``) are
registered on the same registry by :mod:`modelgate.observability.deployment_metrics`;
fairness audits' gauges (``fairness_*{model,version,attribute[,group]}``) by
:mod:`modelgate.observability.fairness_metrics`, while the background audit runs.

Cardinality: the tenant label takes at most ``max_tenants`` values per process; requests
of further tenants are counted under ``tenant="_other"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelgate.observability.state_metrics import StateCollector
from modelgate.observability.tallies import TalliedHistogram, Tallies, Tally

if TYPE_CHECKING:
    from modelgate.core.admission.admission import Admission
    from modelgate.core.admission.backpressure import RefusalBackpressure
    from modelgate.core.admission.metering import UsageRecorder
    from modelgate.core.serving.registry import ModelRegistry

__all__ = ["CONTENT_TYPE_LATEST", "LATENCY_BUCKETS", "OTHER_TENANT", "PrometheusMetrics"]

#: the tenant label of requests from tenants beyond ``max_tenants``
OTHER_TENANT = "_other"

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
#: the latency histogram's upper bounds in seconds (+Inf follows)
LATENCY_BUCKETS = _LATENCY
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: the core says "ok"; the metric keeps Triton's word, as the statistics do
_STATUS_LABEL = {"ok": "success"}


class _VersionMetrics:
    """The :class:`~modelgate.core.serving.ports.VersionObserver` of one loaded version."""

    __slots__ = ("_batch_seconds", "_batch_size", "_queue")

    def __init__(self, owner: PrometheusMetrics, model: str, version: str):
        self._queue = owner.queue_depth.labels(model, version)
        self._batch_size = owner.batch_size.labels(model, version)
        self._batch_seconds = owner.batch_seconds.labels(model, version)

    def request(self, status: str, seconds: float) -> None:
        """Counted, with the tenant, by :meth:`PrometheusMetrics.served`."""

    def batch(self, size: int, compute_ns: int) -> None:
        self._batch_size.observe(size)
        self._batch_seconds.observe(compute_ns / 1e9)

    def queue(self, depth: int) -> None:
        self._queue.set(depth)


class _ServedMetrics:
    """The children of one (model, version, tenant)."""

    __slots__ = ("counters", "labels", "latency", "owner", "rows", "tokens")

    def __init__(self, owner: PrometheusMetrics, model: str, version: str, tenant: str):
        self.owner = owner
        self.labels = (model, version, tenant)
        self.counters: dict[str, Tally] = {}
        self.latency = owner.latency.labels(model, version, tenant)
        self.rows = owner.tally(owner.usage_rows.labels(model, tenant))
        self.tokens = owner.tally(owner.usage_tokens.labels(model, tenant))

    def counter(self, status: str) -> Tally:
        child = self.owner.requests.labels(*self.labels, _STATUS_LABEL.get(status, status))
        tally = self.counters[status] = self.owner.tally(child)
        return tally


#: result-cache events: (event, metric name after ``modelgate_cache_``, help)
_CACHE_EVENTS = (
    ("hit", "hits", "Result cache lookups that found a fresh answer"),
    ("miss", "misses", "Result cache lookups that found none (or were told not to look)"),
    ("stale", "stale", "Expired answers served because the model could not answer"),
    ("store", "stores", "Answers written to the result cache"),
    ("eviction", "evictions", "Entries the in-process result cache dropped to stay in bounds"),
)


class PrometheusMetrics:
    """The :class:`~modelgate.core.serving.ports.InferenceObserver` backed by prometheus-client."""

    def __init__(self, registry: CollectorRegistry | None = None, *, max_tenants: int = 500):
        self.registry = registry or CollectorRegistry()
        self.max_tenants = max_tenants
        self._tallies = Tallies()
        self.registry.register(self._tallies)  # first: collected before the counters
        version = ("model", "version")
        self.requests = Counter(
            "modelgate_inference_requests",
            "Inference requests by outcome",
            (*version, "tenant", "status"),
            registry=self.registry,
        )
        self.latency = TalliedHistogram(
            "modelgate_inference_request_duration_seconds",
            "Inference latency in the core, every outcome",
            (*version, "tenant"),
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "modelgate_inference_queue_depth",
            "Requests waiting in the batcher",
            version,
            registry=self.registry,
        )
        self.batch_size = TalliedHistogram(
            "modelgate_inference_batch_size",
            "Rows per runtime call",
            version,
            buckets=_BATCH,
            registry=self.registry,
        )
        self.batch_seconds = TalliedHistogram(
            "modelgate_inference_batch_duration_seconds",
            "Time of one runtime call",
            version,
            buckets=_LATENCY,
            registry=self.registry,
        )
        self.usage_rows = Counter(
            "modelgate_usage_rows",
            "Rows of successful requests",
            ("model", "tenant"),
            registry=self.registry,
        )
        self.usage_tokens = Counter(
            "modelgate_usage_tokens",
            "Tokens of successful requests (embedding models)",
            ("model", "tenant"),
            registry=self.registry,
        )
        self.refusals = Counter(
            "modelgate_refused_requests",
            "Requests refused by admission (rate limits, quotas, plan caps)",
            ("tenant", "reason"),
            registry=self.registry,
        )
        self.explained_rows = Counter(
            "modelgate_explained_rows",
            "Rows explained (parameters.explain), by method",
            ("model", "method"),
            registry=self.registry,
        )
        self.shed_requests = Counter(
            "modelgate_shed_requests",
            "Requests shed because too many were in flight, by plan priority",
            ("priority",),
            registry=self.registry,
        )
        self.queue_shed_requests = Counter(
            "modelgate_queue_shed_requests",
            "Requests shed before they were read because the queueing delay stayed over its "
            "target, by plan priority",
            ("priority",),
            registry=self.registry,
        )
        self.abandoned_requests = Counter(
            "modelgate_abandoned_requests",
            "Requests dropped unanswered, with no work done, because their client had gone",
            ("api",),
            registry=self.registry,
        )
        self.abuse_blocks = Counter(
            "modelgate_abuse_blocks",
            "Keys and client addresses blocked by abuse throttling",
            ("kind",),
            registry=self.registry,
        )
        self.anomalous_requests = Counter(
            "modelgate_anomalous_requests",
            "Requests whose inputs scored above the model's anomaly threshold, by action",
            (*version, "action"),
            registry=self.registry,
        )
        self.loaded_versions = Gauge(
            "modelgate_model_loaded", "1 while a version is loaded", version, registry=self.registry
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
        self.cache_events = {
            event: Counter(f"modelgate_cache_{name}", text, ("model",), registry=self.registry)
            for event, name, text in _CACHE_EVENTS
        }
        self._cache_children: dict[tuple[str, str], Counter] = {}
        self._http_children: dict[tuple[str, int], Tally] = {}
        self._served: dict[tuple[str, str, str], _ServedMetrics] = {}
        # (tenant, reason) -> its refusals' tally, for tenants with a label of their own;
        # (label, reason) -> the tally of that child, whatever tenants it counts (bounded)
        self._refusal_children: dict[tuple[str, str], Tally] = {}
        self._refusal_tallies: dict[tuple[str, str], Tally] = {}
        self._anomaly_children: dict[tuple[str, str, str], Tally] = {}
        self._tenants: set[str] = set()
        self._shed = {p: self.shed_requests.labels(p) for p in ("none", *map(str, range(10)))}
        # shed on queueing delay, by priority (None: unknown): prebuilt, since under overload
        # most answers are these
        self._shed_for_delay: dict[int | None, Tally] = {
            p: self.tally(self.queue_shed_requests.labels("none" if p is None else str(p)))
            for p in (None, *range(10))
        }
        for kind in ("key", "address"):  # known up front: their series exist from the start
            self.abuse_blocks.labels(kind)
        self._state = StateCollector()
        self.registry.register(self._state)

    def track(
        self,
        *,
        registry: ModelRegistry | None = None,
        admission: Admission | None = None,
        usage: UsageRecorder | None = None,
        records: Sequence[tuple[str, RecordKeeper]] = (),
    ) -> None:
        """Export the state of these (read at each scrape): models, requests in flight,
        degraded stores, the usage backlog, what the recorders hold and did not keep."""
        self._state.registry = registry
        self._state.admission = admission
        self._state.usage = usage
        self._state.records = tuple(records)

    def track_accept_queue(self, read: Callable[[], tuple[int, int] | None]) -> None:
        """Export the HTTP listener's accept queue: ``read`` gives (waiting, bound), or None
        where unknown (read at each scrape)."""
        self._state.accept_queue = read

    def track_backpressure(self, backpressure: RefusalBackpressure) -> None:
        """Export the refusals held on flooding connections (read at each scrape)."""
        self._state.backpressure = backpressure

    def tally(self, child: Counter) -> Tally:
        """A counter child counted in a plain integer (:mod:`.tallies`)."""
        return self._tallies.tally(child)

    def flush(self) -> None:
        """Add what the tallies counted since the last read to their children: every
        scrape does, and the alert evaluator before it reads the counters."""
        self._tallies.flush()

    # -- InferenceObserver -------------------------------------------------------------
    def version(self, model: str, version: str) -> _VersionMetrics:
        return _VersionMetrics(self, model, version)

    def loaded(self, model: str, version: str, loaded: bool) -> None:
        self.loaded_versions.labels(model, version).set(1 if loaded else 0)
        if loaded:
            self.models_loaded.inc()
        else:
            self.models_loaded.dec()

    def served(
        self,
        model: str,
        version: str,
        tenant: str,
        status: str,
        seconds: float,
        rows: int,
        tokens: int,
    ) -> None:
        children = self._served.get((model, version, tenant))
        if children is None:
            children = self._children(model, version, tenant)
        counter = children.counters.get(status)
        if counter is None:
            counter = children.counter(status)
        counter.total += 1
        children.latency.observe(seconds)
        if rows:
            children.rows.total += rows
        if tokens:
            children.tokens.total += tokens

    def refused(self, tenant: str, reason: str) -> None:
        # a refusal can be as frequent as a success (a client that does not back off), and
        # is answered before its request is read (issue 15): an integer added to, no lock
        tally = self._refusal_children.get((tenant, reason))
        if tally is None:
            label = self._tenant_label(tenant)
            tally = self._refusal_tallies.get((label, reason))
            if tally is None:
                child = self.refusals.labels(label, reason)
                tally = self._refusal_tallies[(label, reason)] = self.tally(child)
            if label == tenant:
                self._refusal_children[(tenant, reason)] = tally
        tally.total += 1

    def shed(self, priority: int | None) -> None:
        label = "none" if priority is None else str(priority)
        child = self._shed.get(label)
        if child is None:
            child = self._shed[label] = self.shed_requests.labels(label)
        child.inc()

    def shed_for_delay(self, priority: int | None) -> None:
        tally = self._shed_for_delay.get(priority)
        if tally is None:  # a priority outside 0-9 (plans are validated to it)
            child = self.queue_shed_requests.labels(str(priority))
            tally = self._shed_for_delay[priority] = self.tally(child)
        tally.total += 1

    def abandoned(self, api: str) -> None:
        self.abandoned_requests.labels(api).inc()

    def shed_tenant_for_delay(self, tenant: str) -> None:
        """A request of ``tenant`` shed on queueing delay: counted with the admission
        refusals, reason ``queue_delay``, so an operator sees who fair shedding hit."""
        self.refused(tenant, "queue_delay")

    def blocked(self, kind: str) -> None:
        self.abuse_blocks.labels(kind).inc()

    def explained(self, model: str, method: str, rows: int) -> None:
        """Rows explained: a few per second at most (each costs thousands of model rows),
        so prometheus-client's own counter is cheap enough here."""
        self.explained_rows.labels(model, method).inc(rows)

    def anomalous(self, model: str, version: str, action: str) -> None:
        """The :class:`~modelgate.core.monitoring.ports.AnomalyObserver`: ``action`` is
        ``"flagged"`` or ``"rejected"``. Its series are kept: garbage traffic pays one
        dictionary lookup here, not ``labels``."""
        key = (model, version, action)
        tally = self._anomaly_children.get(key)
        if tally is None:
            tally = self._anomaly_children[key] = self.tally(self.anomalous_requests.labels(*key))
        tally.total += 1

    def cache_event(self, model: str, event: str) -> None:
        """The :class:`~modelgate.core.serving.ports.CacheObserver`. A model's first event makes
        all of its cache series (at 0), so that a ratio has both terms from the start."""
        child = self._cache_children.get((model, event))
        if child is None:
            for each, counter in self.cache_events.items():
                self._cache_children[(model, each)] = counter.labels(model)
            child = self._cache_children[(model, event)]
        child.inc()

    def served_series(self) -> list[tuple[tuple[str, str, str], dict[str, int], list[int]]]:
        """Each (model, version, tenant label) served so far: its requests per outcome (the
        core's word: ``ok``, ``invalid_argument``, ...) and its latency bucket counts (not
        cumulative, one per bound of :data:`LATENCY_BUCKETS` and +Inf), exact now: read
        from the tallies, with no flush nor collection (``/admin/traffic``)."""
        return [
            (key, {status: t.total for status, t in c.counters.items()}, list(c.latency.counts))
            for key, c in list(self._served.items())
        ]

    def _children(self, model: str, version: str, tenant: str) -> _ServedMetrics:
        """The first request of a (model, version, tenant): label children, cached. Past
        ``max_tenants`` tenants, a new tenant shares the ``_other`` children (not cached
        under its own name, so that memory stays bounded too)."""
        key = (model, version, self._tenant_label(tenant))
        children = self._served.get(key)
        if children is None:
            children = self._served[key] = _ServedMetrics(self, *key)
        return children

    def _tenant_label(self, tenant: str) -> str:
        """``tenant``, or ``_other`` once ``max_tenants`` others have been seen."""
        if tenant not in self._tenants:
            if len(self._tenants) >= self.max_tenants:
                return OTHER_TENANT
            self._tenants.add(tenant)
        return tenant

    # -- HTTP --------------------------------------------------------------------------
    def http_answer(self, api: str, status: int) -> None:
        key = (api, status)
        tally = self._http_children.get(key)
        if tally is None:
            tally = self.http_answers(api, status)
        tally.total += 1

    def http_answers(self, api: str, status: int) -> Tally:
        """The tally :meth:`http_answer` adds to, for a caller that counts one status many
        times (the HTTP protocol's early 503s: ``tally.total += 1``)."""
        key = (api, status)
        tally = self._http_children.get(key)
        if tally is None:
            tally = self._http_children[key] = self.tally(self.http.labels(api, str(status)))
        return tally

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RecordKeeper(Protocol):
    """A background recorder of rows (the feedback recorder, the payload logger)."""

    @property
    def pending(self) -> int: ...

    def not_kept(self) -> dict[str, int]: ...
