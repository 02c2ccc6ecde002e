"""Settings of the server process, read at the edge and handed inward as arguments.

Precedence, highest first (written once, in :func:`load_settings`):

1. command-line flags (``modelgate serve --http-port 9000``)
2. environment variables (``MODELGATE_HTTP_PORT=9000``)
3. a YAML file (``--config modelgate.yaml`` or ``MODELGATE_CONFIG``), keys as below
4. the defaults below
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = ["EXPLAIN_MAX_MODEL_ROWS", "Settings", "load_settings"]

#: the most model rows KernelSHAP may run per explained row (samples x background rows)
EXPLAIN_MAX_MODEL_ROWS = 1 << 20

#: a region's name (a metric label and a response parameter; core/gateway/regions.py)
_REGION = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


class Settings(BaseSettings):
    """Every setting of ``modelgate serve``; environment names are ``MODELGATE_`` + upper case."""

    model_config = SettingsConfigDict(env_prefix="MODELGATE_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    #: state (SQLite and friends); created when missing
    data_dir: Path = Path(".modelgate")
    #: folder of model folders (see docs/model-repository.md)
    model_repository: Path = Path("models")
    workers: int = Field(default=1, ge=1, le=64)
    #: serve REST and gRPC over TLS with this certificate (PEM, chain first) and key
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: peers whose X-Forwarded-For / X-Forwarded-Proto are trusted (comma-separated addresses
    #: or networks, "*" for any): put your load balancer here, so that per-address abuse
    #: throttling sees clients, not the balancer. Empty (the default): the headers are
    #: ignored and the TCP peer is the client, so no local process can pick its own address
    forwarded_allow_ips: str = ""

    #: request limits: a bigger body answers 413, a bigger tensor too (checked before allocation)
    #: ``max_body_bytes``: inference, embeddings, jobs and feedback
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: the body of an ``/admin`` request and of ``/v2/repository`` (``/oauth/token``: 16 KiB)
    admin_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: ``/admin`` requests per second of one tenant, all its keys together (bursts of
    #: ``admin_rate_burst``); more answer 429 with Retry-After. Operators are not limited.
    #: 0: no limit (docs/access-control.md)
    admin_rate_limit: float = Field(default=10.0, ge=0)
    admin_rate_burst: int = Field(default=60, ge=1)

    # -- HTTP connections (REST) --
    #: the request line and headers of one request, together; more answers 431 and closes
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    #: a client has this long, from its connection or its request's first byte, to send the
    #: complete headers; then 408 and the connection is closed (slowloris)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: a request's whole body must arrive within this long of its headers (a trickled body
    #: would hold its request for ever); later: 408 and the connection closed
    http_body_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: an idle kept-alive connection is closed after this long
    http_keepalive_seconds: int = Field(default=15, ge=1, le=3600)
    #: open connections per worker process; a connection over it is closed at once
    http_max_connections: int = Field(default=4096, ge=1)
    max_elements: int = Field(default=16 * 1024 * 1024, ge=1)
    grpc_max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: gRPC: the metadata (headers) of one call; more is refused (RESOURCE_EXHAUSTED)
    grpc_max_metadata_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    #: gRPC: a connection with no call for this long is closed (GOAWAY; clients reconnect)
    grpc_max_connection_idle_seconds: float = Field(default=300.0, gt=0)
    #: gRPC: calls at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). grpc
    #: clients do not queue calls past it: the server refuses them, so it is set well above
    #: what one client channel runs at once (work in flight is bounded by max_inflight)
    grpc_max_concurrent_streams: int = Field(default=1024, ge=1)
    #: gRPC: open connections per worker process; more are refused by gRPC core
    grpc_max_connections: int = Field(default=4096, ge=1)
    #: gRPC: a connection must finish its handshake (TCP, TLS, HTTP/2 preface) in this time
    grpc_handshake_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: gRPC server reflection (grpcurl, Postman, Evans list the services without .proto
    #: files); it tells the schema only, which is Triton's public proto
    grpc_reflection: bool = True

    #: models whose warm-up batch takes longer than this run in worker threads
    inline_threshold_ms: float = Field(default=1.0, ge=0)
    worker_threads: int = Field(default=4, ge=1)
    #: unload a model not used for this long (preloaded models are pinned); unset: never
    idle_unload_seconds: float | None = Field(default=None, gt=0)
    #: unload the models least likely needed soon (by their usage history; least recently
    #: used among equals) while loaded artifacts exceed this; unset: no budget
    memory_budget_mb: int | None = Field(default=None, gt=0)
    #: the predictive warm pool (``warm: predictive`` models, docs/model-repository.md):
    #: how often it plans, how far ahead it looks, and how many weeks of usage it reads;
    #: an interval of 0 turns preloading off (evictions still follow the usage history)
    preload_interval_seconds: float = Field(default=60.0, ge=0)
    preload_lookahead_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    preload_history_weeks: int = Field(default=4, ge=1, le=52)
    #: how long an unloaded or replaced version may finish its in-flight requests
    drain_timeout_seconds: float = Field(default=30.0, ge=0)
    #: on SIGTERM the server reports not ready at once, then keeps serving this long before
    #: it stops accepting connections, so that a load balancer (or Kubernetes) stops
    #: sending it work first; the requests in flight then finish
    shutdown_delay_seconds: float = Field(default=0.0, ge=0, le=300)

    #: access control: "required" (every route but health needs a credential) or "off"
    auth: Literal["required", "off"] = "required"
    #: ``/metrics`` needs a credential with ``models:read`` (else it is open, like health)
    metrics_auth: bool = False
    #: a key with every scope, for the first start (never logged; compare is constant-time)
    admin_key: SecretStr | None = None
    #: where tenants, keys and the audit trail live; unset: SQLite in ``data_dir``
    database_url: SecretStr | None = None
    #: how long a replica trusts a looked-up key: revocation takes effect within this time
    key_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    #: while the database fails, a key that was valid when last looked up keeps working this
    #: long after its cache entry expired (never an unknown, revoked or expired key); 0: never
    key_stale_if_error_seconds: float = Field(default=300.0, ge=0, le=86_400)
    #: JWT bearer tokens are accepted when an issuer is set: their ``iss`` and ``aud`` must
    #: match, signed (RS256/ES256) by a key from ``jwt_jwks_url`` or ``jwt_public_keys``
    jwt_issuer: str | None = None
    jwt_audience: str = "modelgate"
    jwt_jwks_url: str | None = None
    #: key id -> PEM public key (as JSON in the environment)
    jwt_public_keys: dict[str, str] = Field(default_factory=dict)
    #: the claim that names the tenant a token speaks for
    jwt_tenant_claim: str = "tenant"
    #: ``claim=value`` (e.g. ``groups=modelgate-operators``): an identity provider's token is
    #: an operator's (may carry ``tenants:admin``) only when this claim holds this value (a
    #: string equal to it, or a list containing it); unset: never. Tokens modelgate issues
    #: itself keep the scopes of the key they were traded for
    jwt_operator_claim: str | None = Field(default=None, pattern=r"^[^=\s]+=\S+$")
    #: a token whose ``exp`` is further than this from now (or from its ``iat``) is refused
    jwt_max_token_lifetime_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)
    #: with a signing key (PEM, RS256 or ES256) and ``jwt_issuer``, modelgate issues tokens
    #: itself at ``POST /oauth/token`` (client credentials) and publishes the public key at
    #: ``/.well-known/jwks.json``; share the key between replicas
    jwt_signing_key: SecretStr | None = None
    jwt_signing_kid: str = "modelgate"
    jwt_token_ttl_seconds: int = Field(default=900, ge=60, le=86400)
    #: rate limits shared by replicas; unset: each process limits on its own (in memory)
    redis_url: SecretStr | None = None
    #: every Redis key modelgate writes starts with this (several deployments, one Redis)
    redis_key_prefix: str = Field(default="modelgate:", min_length=1, max_length=64)
    #: connect and read timeout of every Redis call
    redis_timeout_seconds: float = Field(default=0.25, gt=0, le=30)
    #: Redis unreachable: "open" limits per replica in memory, "closed" refuses requests
    limiter_failure_mode: Literal["open", "closed"] = "open"
    #: with "open", the share of a limit each replica may admit while Redis is down
    limiter_local_share: float = Field(default=1.0, gt=0, le=1)
    #: with ``redis_url``: each replica leases this share of a rate limit's burst, and
    #: reserves this share of a quota, from Redis and spends it locally, instead of one
    #: Redis round trip per request; 0: a round trip per request. Replicas may pass a rate
    #: limit by at most replicas x 1.5 x this share of the burst; quotas are never passed
    #: (docs/scale-out.md, "Limits across replicas")
    limit_lease_share: float = Field(default=0.01, ge=0, le=0.5)
    #: a lease's tokens not spent within this time expire; a lease is never more than the
    #: bucket refills in this time, and a token quota's exhaustion reaches every replica
    #: within it
    limit_lease_ms: int = Field(default=1000, ge=1, le=60_000)

    #: overload: at most this many inference requests in flight per process; plans of lower
    #: priority are shed first (see docs/access-control.md, "Priority and load shedding")
    max_inflight: int = Field(default=512, ge=1)
    #: overload: shed new inference requests (503, before they are read) once the event
    #: loop's lag has stayed at or above this for a whole interval (CoDel's rule; see
    #: docs/operations.md, "A saturated server"); 0: off (no timer, nothing asked)
    shed_queue_target_ms: float = Field(default=0, ge=0, le=10_000)
    #: the interval the lag must stay above the target before shedding starts
    shed_queue_interval_ms: float = Field(default=500, ge=10, le=60_000)
    #: how much is shed: "pie", a fraction of new requests that rises with how far and how
    #: long the delay stays above the target (RFC 8033's control law); "onoff", every
    #: eligible request while the delay has stayed above it for an interval
    shed_queue_law: Literal["pie", "onoff"] = "pie"
    #: with shedding on, a request that waited this long before its handler started (from
    #: its first bytes read) is refused 503 at once, whatever the controller says; 0: no bound
    shed_queue_max_wait_ms: float = Field(default=0, ge=0, le=600_000)
    #: readiness reports not ready once shedding has lasted this long
    shed_queue_unready_seconds: float = Field(default=2.0, ge=0, le=600)
    #: back-pressure on a flooding connection: after this many refusals in a row from the
    #: refusal memo on one connection, each further one is held before it is answered
    #: (docs/access-control.md, "What a flooding client sees"); 0: off
    refusal_burst: int = Field(default=10, ge=0, le=1_000_000)
    #: ... for the Retry-After it carries, at most this long
    refusal_hold_seconds: float = Field(default=1.0, gt=0, le=60)
    #: ... less a random part of up to this share of it, so that a flood's connections,
    #: refused together, come back one at a time; 0: every hold the whole time
    refusal_hold_spread: float = Field(default=0.5, ge=0, lt=1)
    #: ... and at most this many at once per process; past it a refusal is answered at once
    #: and its connection closed (REST)
    refusal_max_held: int = Field(default=1024, ge=1, le=1_000_000)
    #: while shedding, tenants over their fair share of recent admissions are shed first;
    #: "recent" decays with this half-life (see docs/access-control.md, "How tenants share
    #: a saturated server")
    shed_queue_share_half_life_seconds: float = Field(default=1.0, gt=0, le=600)
    #: with shedding on, also drain on the HTTP listener's accept queue: once new
    #: connections' first requests have waited past the target for an interval with 64 or
    #: more connections queued, every inference request is refused until the queue is gone
    #: (docs/operations.md, "Draining the accept queue"): far fewer requests time out under
    #: a flood of new connections, and fewer are served; off: not asked (no cost)
    shed_accept_queue: bool = False
    #: the deadline of an inference that brings none (``X-Request-Timeout-Ms`` on REST, the
    #: call's deadline on gRPC): work not started by then answers 504 / DEADLINE_EXCEEDED
    request_timeout_seconds: float | None = Field(default=None, gt=0)

    #: the result cache (docs/caching.md): answers of models whose manifest has a ``cache``
    #: section; off: none is cached and ``GET .../infer`` is not offered
    cache_enabled: bool = True
    #: the in-process cache's bounds (least recently used out first); with ``redis_url``
    #: the cache is in Redis instead, under ``<redis_key_prefix>cache:``
    cache_max_entries: int = Field(default=10_000, ge=1)
    cache_max_mb: int = Field(default=256, ge=1)
    #: a bigger answer is not cached
    cache_max_entry_bytes: int = Field(default=1024 * 1024, ge=1)

    #: usage metering: how often the recorder writes its aggregates and keys' last-used times
    usage_flush_seconds: float = Field(default=1.0, gt=0, le=60)
    #: the currency prices are in (a label on reports; modelgate converts nothing)
    currency: str = Field(default="USD", min_length=1, max_length=8)
    #: quota alerts: a JSON event is POSTed here when a tenant crosses 80% and 100% of a quota
    quota_webhook_url: str | None = None
    #: signs every webhook body (HMAC-SHA256, header ``X-Modelgate-Signature``)
    webhook_secret: SecretStr | None = None
    #: connect and read timeout of each webhook call
    webhook_timeout_seconds: float = Field(default=2.0, gt=0, le=30)

    #: abuse: a key's failed requests (invalid input, denied, unknown model) counted per window
    abuse_window_seconds: float = Field(default=60.0, gt=0)
    #: ... after this many in a window its answers are slowed down
    abuse_slow_after: int = Field(default=20, ge=1)
    #: ... after this many it is blocked (429) for ``abuse_block_seconds``
    abuse_block_after: int = Field(default=50, ge=1)
    abuse_block_seconds: float = Field(default=300.0, gt=0)
    #: failed authentications from one client address per window before it is blocked
    abuse_auth_failures_per_ip: int = Field(default=30, ge=1)

    # -- operations: traces and logs --
    #: send traces to this OpenTelemetry collector (OTLP over gRPC), e.g.
    #: ``http://otel-collector:4317`` (``http://``: plaintext; ``https://`` or none: TLS);
    #: unset: no tracing, at no cost per request
    otlp_endpoint: str | None = None
    #: the share of new traces recorded; a client's ``traceparent`` decides for its own
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    #: the ``service.name`` of every span (``OTEL_SERVICE_NAME`` overrides it)
    trace_service_name: str = Field(default="modelgate", min_length=1)
    #: "json" (one object a line, for log pipelines) or "text" (for people)
    log_format: Literal["json", "text"] = "json"
    #: one log line per request (request id, trace id, tenant, model, version, status,
    #: latency), written at any ``log_level``
    access_log: bool = True

    # -- operations: alerts --
    #: built-in alert rules (see docs/operations.md, "Built-in alerts"): a YAML file, or
    #: the rules themselves (a list; JSON in the environment); unset: the default rules
    #: (error rate and p99 latency per model); an empty list turns built-in alerts off
    alert_rules: Path | list[dict[str, Any]] | None = None
    #: how often the alert rules are evaluated
    alert_interval_seconds: float = Field(default=15.0, gt=0, le=3600)
    #: firing and resolved alerts are POSTed here as JSON, signed with ``webhook_secret``
    #: like quota alerts; unset: alerts are only logged
    alert_webhook_url: str | None = None

    # -- model monitoring (docs/monitoring.md) --
    #: each version's sliding window: its last this many input rows...
    monitoring_window_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    #: ...no older than this
    monitoring_window_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400)
    #: a window with fewer rows reports "insufficient data" and never drift
    monitoring_min_rows: int = Field(default=100, ge=1)
    #: concept drift (docs/monitoring.md, "Feedback and concept drift"): a version's
    #: window is its last this many labelled predictions...
    feedback_window_labels: int = Field(default=1000, ge=1, le=1_000_000)
    #: ...made no longer ago than this
    feedback_window_seconds: float = Field(default=7 * 86400.0, gt=0)
    #: fewer labelled predictions report "insufficient data" and never drift
    feedback_min_labels: int = Field(default=100, ge=1)
    #: how often recorded predictions are written, in one batch
    feedback_flush_seconds: float = Field(default=1.0, gt=0, le=60)
    #: at most this many prediction rows wait in memory to be written; a request that
    #: would go beyond is not recorded (counted)
    feedback_max_pending: int = Field(default=50_000, ge=1)
    #: one request records at most its first this many rows (the rest counted, not kept)
    feedback_max_request_rows: int = Field(default=1000, ge=1)
    #: feedback for a request id not found yet is looked for again this long (another
    #: replica writes its predictions within its flush interval) before answering 404
    feedback_wait_seconds: float = Field(default=2.0, ge=0, le=60)
    #: how often predictions past their retention are deleted
    feedback_purge_seconds: float = Field(default=3600.0, gt=0)
    #: fairness audits (docs/fairness.md): at most this many labelled predictions, the
    #: newest of the window, are read by one audit...
    fairness_max_rows: int = Field(default=50_000, ge=100, le=1_000_000)
    #: ...made no longer ago than this, unless the audit names ``since``
    fairness_window_seconds: float = Field(default=30 * 86400.0, gt=0)
    #: the background audit behind the fairness gauges and alerts audits each loaded model
    #: with protected attributes this often, one model at a time; 0 turns it off
    fairness_audit_interval_seconds: float = Field(default=300.0, ge=0, le=86400)
    #: a canary whose model sets ``fairness.gates`` is audited again at most this often
    fairness_gate_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: an audit is kept this long and answers the same question again (model, version,
    #: attribute, tenant, since, until); identical audits running at once always run once.
    #: 0: none kept
    fairness_cache_seconds: float = Field(default=30.0, ge=0, le=3600)
    #: audits a tenant's credentials may make the server compute, per minute (answers from
    #: the cache are free); operators are not limited. 0: no limit
    fairness_audits_per_minute: int = Field(default=10, ge=0)
    #: explanations (``parameters.explain``, docs/explanations.md): at most this many rows
    #: per request (more answers 413)...
    explain_max_rows: int = Field(default=16, ge=1, le=4096)
    #: ...KernelSHAP's coalition samples per row (each runs the model on every background
    #: row: samples x background rows per explained row, in one runtime call)...
    explain_samples: int = Field(default=4096, ge=16, le=65536)
    #: ...and background rows, drawn from the version's reference profile
    explain_background_rows: int = Field(default=32, ge=1, le=1024)
    #: explanations computed at once, each in a worker thread, and how many may wait for
    #: one (more answer 503 with Retry-After)
    explain_concurrency: int = Field(default=2, ge=1, le=64)
    explain_queue: int = Field(default=8, ge=0, le=10_000)
    #: ...of which one tenant may have this many waiting (a freed slot goes to the tenant
    #: holding the fewest: one tenant cannot take every slot and place while others wait)
    explain_tenant_queue: int = Field(default=4, ge=0, le=10_000)
    #: rows a tenant may have explained per minute when its plan sets no
    #: ``explanations_per_minute``; 0: such a plan may not explain at all
    explain_default_per_minute: int = Field(default=60, ge=0, le=1_000_000)
    #: who may explain a version the learning loop trained from tenants' data (its card's
    #: ``trained_by``): its reference profile, which the attributions reveal, is computed
    #: from that data. operators (``tenants:admin``) only, or every caller allowed to use it
    explain_learned_models: Literal["operators", "everyone"] = "operators"
    #: the learning loop (docs/learning.md): the Python interpreter trainers run with
    #: (unset: the server's own); it needs numpy, modelgate and the trainer's libraries
    learning_python: str | None = None
    #: how often the manifests' learning triggers (labels, schedule, drift) are checked
    learning_trigger_seconds: float = Field(default=60.0, ge=1, le=86_400)
    #: learning runs' folders (records, rejected candidates) are deleted this many days after
    #: the run ended (a run's training data is deleted when its training ends)
    learning_retention_days: float = Field(default=30.0, gt=0, le=3650)

    # -- data governance --
    #: payload logging (docs/privacy.md): AES-GCM keys that seal logged inputs and outputs,
    #: key id -> base64 key of 16, 24 or 32 bytes (JSON in the environment). Keep a rotated
    #: key here as long as rows sealed with it exist; unset: payloads are never logged
    payload_keys: dict[str, SecretStr] = Field(default_factory=dict)
    #: the key id new rows are sealed with; may be unset when there is one key
    payload_active_key: str | None = None
    #: the HMAC-SHA256 key that turns data-subject ids into pseudonyms (required with
    #: ``payload_keys``); changing it leaves existing rows out of subject export and erasure
    payload_pseudonym_key: SecretStr | None = None
    #: how often kept payloads are sealed and written, in one batch
    payload_flush_seconds: float = Field(default=1.0, gt=0, le=60)
    #: at most this many payloads wait in memory to be written; more are dropped, counted
    payload_max_pending: int = Field(default=10_000, ge=1)
    #: a payload larger than this (inputs and outputs) is not kept
    payload_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: at most this many bytes of payloads (estimated on the request path) wait in memory
    payload_max_pending_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    #: how often a replica re-reads tenants' consent: a change made on another replica
    #: takes this long to apply everywhere
    payload_consent_refresh_seconds: float = Field(default=5.0, gt=0, le=300)
    #: how often rows past their retention are deleted
    payload_purge_seconds: float = Field(default=3600.0, gt=0)

    # -- deployments (docs/deployments.md) --
    #: every replica re-reads the deployments (pinned versions, splits, canaries, shadows)
    #: this often, and judges its canaries: a change reaches every replica within it
    deployment_refresh_seconds: float = Field(default=2.0, gt=0, le=60)
    #: shadow copies running at once per process; more are dropped (and counted)
    shadow_max_pending: int = Field(default=64, ge=1, le=10_000)

    # -- scale-out: roles and nodes (docs/scale-out.md) --
    #: "all": one process serves its own models; "gateway": no models, forwards inference
    #: to nodes (found in Redis or in ``nodes``); "node": serves its models and announces
    #: them in Redis for gateways
    role: Literal["all", "gateway", "node"] = "all"
    #: a gateway's static node list, ``host:port`` of OIP gRPC servers (modelgate nodes,
    #: Triton, MLServer), comma-separated; unset: nodes are found in Redis
    nodes: str | None = None
    #: models to ask a static node for by name (``ModelMetadata``, ``ModelReady``) when it
    #: does not let the gateway read its repository index (PyTriton's Triton restricts it,
    #: a plain KServe server lacks it), comma-separated
    node_models: str | None = Field(default=None, max_length=65_536)
    #: model versions a gateway reads from one static node at most (the rest are left out)
    node_max_models: int = Field(default=1000, ge=1, le=100_000)
    #: the most a gateway's read of one static node (health, index, metadata) may take per
    #: refresh; the nodes are read together, so this bounds a refresh. Past it the node is
    #: left out of that refresh, and the metadata it gave is kept for the next
    node_read_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    #: a node's id in the directory; unset: ``<hostname>-<grpc port>``
    node_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    #: the gRPC address gateways reach this node at; unset: ``host:grpc_port``
    node_address: str | None = None
    #: the stages of sharded models a node holds, ``model:stage,...``; unset: the stages
    #: it can fit in ``memory_budget_mb``, those the fewest nodes hold first
    node_stages: str | None = Field(default=None, max_length=4096)
    #: a node's hardware class; unset: "gpu" when ONNX Runtime has a CUDA provider
    node_hardware: Literal["cpu", "gpu"] | None = None
    #: the credential a gateway sends to its nodes (a key the nodes accept, e.g. their
    #: ``MODELGATE_ADMIN_KEY``)
    node_key: SecretStr | None = None
    #: which entries of a static ``nodes`` list are modelgate nodes and are sent
    #: ``node_key`` (``host:port`` as listed, comma-separated; ``*``: every listed node).
    #: Unset: none is: a Triton or MLServer server (or whoever answers at its address) must
    #: never receive a key that the modelgate nodes accept as their admin key. Nodes found
    #: in Redis announce themselves as modelgate nodes and are always sent it
    node_key_nodes: str | None = Field(default=None, max_length=65_536)
    #: gateways call nodes over TLS, trusting the CA certificates (PEM) in this file; the
    #: nodes serve with ``tls_certfile``/``tls_keyfile``. Unset: plaintext gRPC to nodes
    node_tls_ca_file: Path | None = None
    #: a node re-announces itself this often; its entry lives ``node_ttl_seconds``
    node_heartbeat_seconds: float = Field(default=2.0, gt=0, le=60)
    node_ttl_seconds: float = Field(default=6.0, gt=0, le=600)
    #: a model's version stays in the catalogue of models served recently this long after a
    #: node last announced it, so that a gateway started while its pool is at zero knows it
    #: (its requests wait for a node, then 503) instead of answering 404; 0: no catalogue
    served_models_ttl_seconds: float = Field(default=86_400.0, ge=0, le=30 * 86_400)
    #: a gateway re-reads the node directory this often
    cluster_refresh_seconds: float = Field(default=1.0, gt=0, le=60)
    #: a gateway's call to a node, when the caller set no deadline
    node_timeout_seconds: float = Field(default=30.0, gt=0)
    #: a node (or a model version on a node) is taken out of rotation after this many
    #: failures in a row, for ``breaker_open_seconds``, then probed with one request
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_seconds: float = Field(default=5.0, gt=0)
    #: retries of failed inference on another node: at most this share of requests
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    #: attempts per request, the first included
    node_max_attempts: int = Field(default=3, ge=1, le=10)
    #: a gateway merges concurrent requests for one model version (whose manifest has a
    #: ``batching`` section, and whose ``anomaly`` check, if any, the gateway runs itself)
    #: into one node call, with at most
    #: ``gateway_merge_calls`` such calls in flight per version (docs/scale-out.md)
    gateway_merge: bool = True
    gateway_merge_calls: int = Field(default=8, ge=1, le=1024)
    #: a request for a model no node announces (its pool scaled to zero) waits this long
    #: for a node to announce it, then answers 503 with Retry-After; 0: answer at once
    cold_start_wait_seconds: float = Field(default=5.0, ge=0, le=600)
    #: requests that may wait for a node at once, per gateway; more are answered at once
    cold_start_max_waiting: int = Field(default=1000, ge=0, le=100_000)

    # -- scale-out: regions and capacity classes (docs/scale-out.md) --
    #: the region of this process: a node announces it; a gateway prefers its own region's
    #: nodes and fails over to others only when its own has no healthy node for a model.
    #: Unset: no regions (every node alike, as before)
    region: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    #: a gateway's order of the other regions to fail over to, comma-separated (regions not
    #: named come last, together)
    region_failover: str = Field(default="", pattern=r"^[a-z0-9._,-]{0,1024}$")
    #: other regions' Redis (URLs, comma-separated), whose node announcements a gateway
    #: reads besides its own ``redis_url``'s: how it finds the nodes it fails over to
    region_redis_urls: SecretStr | None = None
    #: a node's capacity class: "spot" nodes may be reclaimed at short notice; gateways send
    #: them job items first and interactive requests only when on-demand nodes are saturated
    capacity_class: Literal["on-demand", "spot"] = "on-demand"
    #: calls in flight from a gateway to one on-demand node at which interactive requests
    #: spill over to spot nodes (0: only when no on-demand node can serve the model)
    ondemand_saturation: int = Field(default=16, ge=0, le=100_000)

    # -- asynchronous jobs (docs/jobs.md) --
    #: ``modelgate serve`` also runs a job worker in its process (set false when separate
    #: ``modelgate worker`` processes run the jobs)
    jobs_worker: bool = True
    #: jobs one worker runs at once
    jobs_worker_slots: int = Field(default=2, ge=1, le=64)
    #: items of one job run at once (the batcher merges them)
    jobs_item_concurrency: int = Field(default=8, ge=1, le=256)
    #: a worker owns a job this long after its last heartbeat (every third of it); then
    #: another worker takes the job: how long a killed worker's job waits
    jobs_lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    #: attempts before a job goes to the dead letter (state ``dead``)
    jobs_max_attempts: int = Field(default=3, ge=1, le=100)
    #: first wait before a failed attempt is retried; doubles per attempt, at most 300 s
    jobs_retry_backoff_seconds: float = Field(default=2.0, ge=0, le=300)
    #: queued and running jobs one tenant may have at once
    jobs_max_active_per_tenant: int = Field(default=1000, ge=1)
    #: inference requests one job may carry; more answers 413 at submission
    jobs_max_items: int = Field(default=1000, ge=1, le=1_000_000)
    #: the body of one job submission (all its requests together); more answers 413
    #: before it is parsed. Each request is also held to its model's ``limits``
    jobs_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: how often an idle worker looks for work queued by other processes (one read for all
    #: its slots); a job submitted to this process wakes its worker at once
    jobs_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    #: finished jobs (their requests and results) are deleted this many days after they
    #: ended; workers purge every ``jobs_purge_interval_seconds``
    jobs_retention_days: float = Field(default=30.0, gt=0, le=3650)
    jobs_purge_interval_seconds: float = Field(default=3600.0, ge=1, le=86_400)
    #: job webhooks may call loopback, private and link-local addresses (tests, a private
    #: network you trust); off by default: SSRF defence (docs/security.md)
    jobs_webhook_allow_private: bool = False
    #: on SIGTERM a worker starts no new item; the items running get this long to finish
    #: and have their results written, then each job goes back to the queue for another
    #: worker (a reclaimed spot node's notice is often 30 s or less)
    jobs_handback_seconds: float = Field(default=10.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _roles(self) -> Settings:
        if self.role == "gateway" and self.nodes is None and self.redis_url is None:
            raise ValueError("a gateway needs MODELGATE_REDIS_URL or MODELGATE_NODES")
        return self

    @model_validator(mode="after")
    def _regions(self) -> Settings:
        named = [r.strip() for r in self.region_failover.split(",") if r.strip()]
        named += [e.partition("@")[2].strip() for e in (self.nodes or "").split(",") if "@" in e]
        for region in named:
            if not _REGION.fullmatch(region):
                raise ValueError(f"region {region!r} must match {_REGION.pattern}")
        return self

    @model_validator(mode="after")
    def _explain_work(self) -> Settings:
        # KernelSHAP holds samples x background rows of float64 features per row it explains
        # (about 100 MB at the cap, for 12 features), and runs the model on all of them
        rows = self.explain_samples * self.explain_background_rows
        if rows > EXPLAIN_MAX_MODEL_ROWS:
            raise ValueError(
                f"explain_samples x explain_background_rows is {rows}; at most "
                f"{EXPLAIN_MAX_MODEL_ROWS} model rows per explained row"
            )
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("TLS needs both tls_certfile and tls_keyfile")
        for path in (self.tls_certfile, self.tls_keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file not found: {path}")
        return self


def load_settings(flags: dict[str, Any] | None = None, config_file: str | None = None) -> Settings:
    """Settings from flags, environment, YAML file and defaults, in that precedence."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    yaml_file = config_file or os.environ.get("MODELGATE_CONFIG")
    if yaml_file and not os.path.isfile(yaml_file):
        raise FileNotFoundError(f"config file not found: {yaml_file}")

    class _Sourced(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources = [init_settings, env_settings]
            if yaml_file:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
            return tuple(sources)

    return _Sourced(**flags)
