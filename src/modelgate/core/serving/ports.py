"""The ports of serving, as Protocols: runtimes (with a text model's token counter), the
model repository, the metrics sinks of the request path, the result cache's store and
metrics (with the :class:`CachedResult` it keeps) and the tracer. Adapters and runtimes
implement them.

Contracts are stated on each port; the implementations live outside ``core/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.tensors import Tensor

__all__ = [
    "Arrays",
    "AttributeValue",
    "CacheObserver",
    "CachedResult",
    "InferenceObserver",
    "ModelRepository",
    "ModelRuntime",
    "Predictor",
    "PredictorLoader",
    "ResultStore",
    "Span",
    "Timing",
    "TokenCounter",
    "TokenDecoder",
    "Tracer",
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
    #: how long the model ran the batch that held this request (a merged batch's whole time)
    compute_ns: int = 0
    batch_size: int = 1
    #: this request's own share of the compute, what usage charges it: a merged batch's
    #: compute split among its callers by rows, or by tokens where the runtime counts them,
    #: the shares of one batch adding up to its ``compute_ns`` exactly (the batcher sets it,
    #: summed over the chunks of a request bigger than a batch). None: the request ran
    #: alone, and all of ``compute_ns`` is its own
    compute_share_ns: int | None = None
    deadline: float | None = None
    #: a gateway's remote call: the hardware class and id of the node that answered, and
    #: the response parameters it sent (None: none)
    hardware: str | None = None
    node: str | None = None
    parameters: dict[str, Any] | None = None
    #: whose request it is, for the batcher's turns (None: no tenant: one shared lane),
    #: and the tenant's weight there (its plan's rate; set by admission's step)
    tenant: str | None = None
    weight: float = 1.0
    #: the tenant's plan priority (0-9), which a gateway forwards to its node
    priority: int = 0
    #: an interactive request (a caller waits); False for work that can wait (job items,
    #: shadow copies), which a gateway sends to spot nodes first (core/gateway/capacity.py)
    critical: bool = True

    @property
    def charged_ns(self) -> int:
        """The compute time usage charges this request: its share, else all of it."""
        return self.compute_ns if self.compute_share_ns is None else self.compute_share_ns


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


@dataclass(frozen=True, slots=True)
class CachedResult:
    """One kept answer: the outputs as the caller got them (arrays read-only), with what
    metering needs again (rows, tokens). Times are wall-clock seconds (``time.time()``),
    so that replicas sharing a store agree."""

    model: str
    model_version: str
    outputs: tuple[Tensor, ...]
    rows: int
    tokens: int
    stored_at: float
    #: the entry answers as a hit until then
    fresh_until: float
    #: and as a stale answer (the model failing) until then; the store drops it after
    stale_until: float

    def size_bytes(self) -> int:
        """An estimate of the memory it holds, for the in-process store's bound."""
        total = 256
        for tensor in self.outputs:
            data = tensor.data
            if data.dtype == object:
                total += sum(len(v) + 40 for v in data.reshape(-1))
            else:
                total += data.nbytes
        return total


class ResultStore(Protocol):
    """Where cached results live, keyed by :func:`result_key`.

    - ``get``: the entry, or None when there is none, it is past its ``stale_until``, or the
      store cannot be reached (never raises for the store's failures).
    - ``put``: keep ``result`` until its ``stale_until``, replacing any entry under the key;
      must not block the event loop or raise for the store's failures (a shared store
      writes in the background and drops what it cannot write).
    - ``close``: let go of connections; pending writes are finished or dropped.
    """

    async def get(self, key: str) -> CachedResult | None: ...

    def put(self, key: str, result: CachedResult) -> None: ...

    async def close(self) -> None: ...


class CacheObserver(Protocol):
    """Metrics of the cache: ``event`` is ``hit``, ``miss``, ``stale`` (an expired entry
    answered for a failing model), ``store`` or ``eviction`` (the in-process store made
    room). Must not block."""

    def cache_event(self, model: str, event: str) -> None: ...


class TokenCounter(Protocol):
    """A predictor that tokenizes its text input (the ``text-embedding`` runtime).

    ``count_tokens`` answers each text's token count with the special tokens, untruncated;
    it must be safe to call from any thread, beside ``predict``. ``special_tokens`` is how
    many tokens the tokenizer adds to every text ([CLS] and [SEP]: 2)."""

    special_tokens: int

    def count_tokens(self, texts: list[bytes]) -> list[int]: ...


class TokenDecoder(TokenCounter, Protocol):
    """A token counter that also takes token-id input (``/v1/embeddings``): ``vocab_size``
    bounds the ids; ``decode_tokens`` turns each list of ids (without the special tokens the
    tokenizer adds) into text that tokenizes back to them. Safe from any thread."""

    vocab_size: int

    def decode_tokens(self, ids: list[list[int]]) -> list[str]: ...


AttributeValue = str | int | float | bool


class Span(Protocol):
    """One timed operation of a request. Every method is cheap and never raises."""

    def set(self, key: str, value: AttributeValue) -> None:
        """Attach an attribute (an identifier or a count: never a credential or payload)."""

    def fail(self, kind: str) -> None:
        """Mark the operation as failed with an error kind (``ErrorKind`` values)."""

    def end(self, at_ns: int | None = None) -> None:
        """End now, or at ``at_ns`` on the ``time.perf_counter_ns()`` clock."""


class Tracer(Protocol):
    """Starts spans of the request in progress.

    ``start`` returns a child of the current span (the adapter's request span), started now
    or at ``at_ns`` (``time.perf_counter_ns()`` clock, so a span can be recorded after the
    fact from :class:`~modelgate.core.serving.ports.Timing`). The span is not made current: the
    core's spans have no children. Without a current span, the span starts a trace."""

    def start(self, name: str, at_ns: int | None = None) -> Span: ...
