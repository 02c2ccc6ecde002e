"""The ports the core needs, as Protocols. Adapters and runtimes implement them.

Contracts are stated on each port; the implementations live outside ``core/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from modelgate.core.deployments import Deployment
from modelgate.core.jobs import ClaimedJob, Job, JobQuery, JobResult, JobState, NewJob
from modelgate.core.manifest import ModelManifest
from modelgate.core.predictions import (
    FeedbackRecord,
    LabelledPrediction,
    LabelQuery,
    PredictionRecord,
)

__all__ = [
    "AnomalyObserver",
    "Arrays",
    "DeploymentObserver",
    "DeploymentStore",
    "FeedbackStore",
    "InferenceObserver",
    "JobQueue",
    "ModelRepository",
    "ModelRuntime",
    "Predictor",
    "PredictorLoader",
    "Timing",
    "UsageSink",
    "VersionObserver",
    "VersionSource",
]

Arrays = Mapping[str, np.ndarray[Any, Any]]


@dataclass(slots=True)
class Timing:
    """One request as a runtime serves it: its deadline in, its timings out (nanoseconds).

    ``deadline`` is a ``time.monotonic()`` instant after which the caller no longer waits:
    a runtime does not start the request's work past it (DEADLINE_EXCEEDED)."""

    queue_ns: int = 0
    compute_ns: int = 0
    batch_size: int = 1
    deadline: float | None = None
    #: a gateway's remote call: the hardware class and id of the node that answered, and
    #: the response parameters it sent (None: none)
    hardware: str | None = None
    node: str | None = None
    parameters: dict[str, Any] | None = None


class Predictor(Protocol):
    """A loaded model, synchronous. What a runtime backend (ONNX Runtime, skops, Python) is.

    ``predict`` receives every input named in the signature with the batch dimension first
    and returns every output, batch dimension first, as numpy arrays. It must be safe to call
    from several threads at once. ``close`` releases the model; it is called once, after the
    last ``predict`` has returned.
    """

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]: ...

    def close(self) -> None: ...


class ModelRuntime(Protocol):
    """A loaded model as the event loop sees it: ``infer`` never blocks the loop for long.

    Wrappers (the batcher) satisfy this same Protocol. ``timing`` is filled in when given.
    ``queue_depth`` is the number of requests waiting, for metrics and load shedding.
    """

    async def infer(
        self, inputs: Arrays, timing: Timing | None = None
    ) -> dict[str, np.ndarray[Any, Any]]: ...

    @property
    def queue_depth(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class VersionSource:
    """One version of a model as stored: its number, its folder and its effective manifest."""

    version: int
    path: str
    manifest: ModelManifest


class ModelRepository(Protocol):
    """Where models are stored.

    ``names`` lists every model. ``versions`` reads a model's manifest afresh (so a load after
    an edit sees the edit) and returns its versions, lowest first, after the manifest's
    version policy; it raises NOT_FOUND for an unknown model and INVALID_ARGUMENT for a
    manifest that does not validate.
    """

    def names(self) -> list[str]: ...

    def versions(
        self, name: str, override: Mapping[str, Any] | None = None
    ) -> list[VersionSource]: ...


PredictorLoader = Callable[[VersionSource], Predictor]


class VersionObserver(Protocol):
    """Metrics for one model version; handed out once per loaded version, so it can cache.

    ``request`` is told each request's outcome without its tenant (Triton's statistics);
    a sink that counts requests per tenant counts them in :meth:`InferenceObserver.served`
    instead and may ignore it."""

    def request(self, status: str, seconds: float) -> None: ...

    def batch(self, size: int, compute_ns: int) -> None: ...

    def queue(self, depth: int) -> None: ...


class InferenceObserver(Protocol):
    """Metrics sink for the core (Prometheus in production, a recorder in tests).

    Every method runs on the request path or the event loop: it must not block or do I/O.

    - ``version``: a :class:`VersionObserver` for a version being loaded (the registry).
    - ``loaded``: a version was loaded or unloaded (the registry).
    - ``served``: one inference request ended (the inference service), with the tenant it
      is metered under, its status (``"ok"``, an :class:`~modelgate.errors.ErrorKind`
      value, or ``"cancelled"``), its latency, and the rows and tokens it used (0 unless
      it succeeded).
    - ``refused``: admission refused a request of ``tenant`` for ``reason`` (a short fixed
      name: ``"concurrency"``, ``"tenant_rate_limit"``, ``"quota_rows_per_day"``, ...).
    - ``shed``: admission shed a request of a plan of ``priority`` (None: no plan) because
      too many were in flight.
    - ``blocked``: abuse throttling blocked a subject (``kind``: ``"key"`` or ``"address"``).
    """

    def version(self, model: str, version: str) -> VersionObserver: ...

    def loaded(self, model: str, version: str, loaded: bool) -> None: ...

    def served(
        self,
        model: str,
        version: str,
        tenant: str,
        status: str,
        seconds: float,
        rows: int,
        tokens: int,
    ) -> None: ...

    def refused(self, tenant: str, reason: str) -> None: ...

    def shed(self, priority: int | None) -> None: ...

    def blocked(self, kind: str) -> None: ...


class AnomalyObserver(Protocol):
    """Told of each request the anomaly check marked (``action``: ``"flagged"``) or
    refused (``"rejected"``); on the request path, so it must not block or do I/O."""

    def anomalous(self, model: str, version: str, action: str) -> None: ...


class UsageSink(Protocol):
    """Where the inference service meters each request (the usage recorder).

    ``record`` runs on the request path: it must not block or do I/O."""

    def record(
        self,
        tenant_id: str,
        key_id: str | None,
        model: str,
        version: str | None,
        *,
        hardware: str,
        status: str,
        cache_hit: bool,
        rows: int,
        tokens: int,
        latency_ms: float,
        compute_ms: float,
    ) -> None: ...


class FeedbackStore(Protocol):
    """Where recorded predictions and their feedback (ground truth) live.

    Contract:

    - ``append`` writes every prediction in one transaction (all or none); text a column
      cannot hold is INVALID_ARGUMENT and nothing is written;
    - ``find`` answers the rows of the newest inference of ``tenant_id`` whose request id
      or OIP id is ``request_id``, ordered by row; [] when there is none (another tenant's
      predictions are never found);
    - ``label`` writes every feedback in one transaction; a later label of the same row
      replaces the earlier one (idempotent); feedback of a prediction that no longer
      exists is dropped;
    - ``labelled`` answers labelled predictions of a :class:`LabelQuery`;
    - ``subject_rows`` answers every prediction of these pseudonyms (of one tenant, or of
      all when ``tenant_id`` is None), labelled or not, oldest first;
    - ``delete_subject`` deletes those predictions and their feedback and answers how many
      predictions; ``purge`` deletes the predictions with ``expires_at <= now`` and their
      feedback; both are idempotent.
    """

    async def append(self, records: Sequence[PredictionRecord]) -> None: ...

    async def find(self, tenant_id: str, request_id: str) -> list[PredictionRecord]: ...

    async def label(self, feedback: Sequence[FeedbackRecord]) -> None: ...

    async def labelled(self, query: LabelQuery) -> list[LabelledPrediction]: ...

    async def subject_rows(
        self, subjects: Sequence[str], tenant_id: str | None
    ) -> list[LabelledPrediction]: ...

    async def delete_subject(self, subjects: Sequence[str], tenant_id: str | None) -> int: ...

    async def purge(self, now: datetime) -> int: ...


class JobQueue(Protocol):
    """The durable queue of asynchronous jobs (memory, SQLite, PostgreSQL).

    Times are the caller's (``now``), so a test can drive leases with its own clock.
    Contract:

    - ``submit`` enqueues the job and its items in one transaction and answers
      ``(job, True)``; with an ``idempotency_key`` already used by the same tenant it
      enqueues nothing and answers ``(that job, False)``, whatever its state. When the
      tenant already has ``max_active`` queued or running jobs it raises RATE_LIMITED
      (the count and the insert are one atomic step, across processes).
    - ``list_jobs`` answers a page of a tenant's jobs, newest first.
    - ``get`` answers None for an unknown id, and for another tenant's job when
      ``tenant_id`` is given (None: any tenant, for workers and operators).
    - ``claim`` takes one job, highest ``priority`` first, then oldest: a queued job
      whose retry time has come, or a running job whose lease expired (its worker died).
      Each claim counts an attempt; a job whose lease expired after its last allowed
      attempt turns DEAD instead of being claimed. Two workers never hold one lease:
      PostgreSQL claims with ``SELECT ... FOR UPDATE SKIP LOCKED``, SQLite inside its
      write lock. None: nothing to do. With ``resume``, a running job that ``worker``
      itself holds comes first, and its attempt goes on uncounted: a claim whose answer
      was lost, or a run given up when a write failed (a job worker's slot claims under
      an id of its own and runs one job at a time).
    - ``heartbeat`` moves the lease forward; False when the worker no longer holds it
      (expired and taken, or the job was cancelled): the worker stops.
    - ``complete_item`` writes one item's result once: True when written, False when the
      item already had one (a re-run after a lost lease): the first result stays.
    - ``finish`` ends a running job held by ``worker`` (SUCCEEDED or FAILED); ``retry``
      ends its attempt with ``error``: back to QUEUED, claimable from ``available_at``, or
      DEAD when no attempt is left; ``release`` gives it back at once without counting
      the attempt (a worker shutting down). Each answers None (``release``: False) when
      ``worker`` does not hold the job, and changes nothing.
    - ``cancel`` turns a queued or running job CANCELLED (a running job's worker learns it
      at its next heartbeat) and answers the job; a finished job is answered unchanged;
      None when not found (another tenant's job included).
    - ``requeue`` puts a finished job (DEAD, FAILED, CANCELLED) back in the queue with
      its attempts reset; the items that have a result keep it.
    - ``results`` answers item results with ``index > after``, in index order.
    - ``purge`` deletes up to ``limit`` finished jobs (SUCCEEDED, FAILED, CANCELLED,
      DEAD) that ended before ``before``, with their items and results, and answers how
      many it deleted; queued and running jobs are never touched. A purged job's
      idempotency key is free again.
    """

    async def submit(self, job: NewJob, max_active: int | None) -> tuple[Job, bool]: ...

    async def get(self, job_id: str, tenant_id: str | None = None) -> Job | None: ...

    async def list_jobs(self, query: JobQuery) -> list[Job]: ...

    async def claim(
        self, worker: str, now: datetime, lease_s: float, *, resume: bool = False
    ) -> ClaimedJob | None: ...

    async def heartbeat(self, job_id: str, worker: str, now: datetime, lease_s: float) -> bool: ...

    async def complete_item(self, job_id: str, result: JobResult) -> bool: ...

    async def finish(
        self, job_id: str, worker: str, state: JobState, error: str | None, now: datetime
    ) -> Job | None: ...

    async def retry(
        self, job_id: str, worker: str, error: str, now: datetime, available_at: datetime
    ) -> Job | None: ...

    async def release(self, job_id: str, worker: str, now: datetime) -> bool: ...

    async def cancel(self, job_id: str, tenant_id: str | None, now: datetime) -> Job | None: ...

    async def requeue(self, job_id: str, tenant_id: str | None, now: datetime) -> Job | None: ...

    async def results(self, job_id: str, after: int = -1, limit: int = 1000) -> list[JobResult]: ...

    async def purge(self, before: datetime, limit: int = 1000) -> int: ...


class DeploymentStore(Protocol):
    """Where each model's deployment lives (memory, SQLite, PostgreSQL), shared by the
    replicas that read it.

    Contract:

    - ``get`` answers the model's deployment, or None; ``list`` every deployment, by model;
    - ``put`` writes ``deployment`` only over the revision it was read at: with
      ``expected_revision`` 0 only when the model has none yet, otherwise only when the
      stored revision is ``expected_revision``; ``deployment.revision`` must be
      ``expected_revision + 1``. It answers False (and writes nothing) when another writer
      got there first: compare and set, atomic across processes. The stored deployment
      comes back equal (``updated_at`` to the microsecond);
    - ``delete`` removes the model's deployment; False when there was none.

    Text a column cannot hold (a model name over 256 characters, NUL) is INVALID_ARGUMENT.
    """

    async def get(self, model: str) -> Deployment | None: ...

    async def list(self) -> list[Deployment]: ...

    async def put(self, deployment: Deployment, expected_revision: int) -> bool: ...

    async def delete(self, model: str) -> bool: ...


class DeploymentObserver(Protocol):
    """Metrics of deployments (Prometheus in production); must not block or do I/O.

    - ``deployment``: the model's serving arms changed: (version, percent, role) each, and
      its stage (``stable``, ``split``, ``canary-2of3``); ``arms`` empty: no deployment;
    - ``shadowed``: one shadow copy ended (``outcome``: ``ok``, ``error``, ``dropped``) with
      the rows compared on label outputs and how many agreed, and the sum of absolute
      differences over ``elements`` score elements.
    """

    def deployment(self, model: str, arms: Sequence[tuple[int, int, str]], stage: str) -> None: ...

    def shadowed(
        self,
        model: str,
        version: str,
        shadow_version: str,
        outcome: str,
        seconds: float,
        rows: int,
        agreed: int,
        abs_diff: float,
        elements: int,
    ) -> None: ...
