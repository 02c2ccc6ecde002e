"""What an inference is asked and answers, as every context sees it.

The protocol adapters decode into :class:`InferenceRequest` and encode the
:class:`InferenceResponse`; listeners (monitoring, feedback, payload logging) are told of a
:class:`CompletedInference`. These types live at the bottom of the request path, apart
from the pipeline that composes the contexts (:mod:`modelgate.core.pipeline.inference`),
so a context reads them without importing the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from modelgate.core.access.identity import Principal
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.signature import RequestedOutput
from modelgate.core.serving.tensors import Parameters, Tensor

__all__ = [
    "ANONYMOUS",
    "CompletedInference",
    "InferenceListener",
    "InferenceRequest",
    "InferenceResponse",
]

#: the tenant usage is recorded under when access control is off
ANONYMOUS = "anonymous"


@dataclass(slots=True)
class InferenceRequest:
    model: str
    version: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    #: ``time.monotonic()`` instant after which the caller no longer waits (its timeout or
    #: gRPC deadline); work not started by then is refused with DEADLINE_EXCEEDED
    deadline: float | None = None
    #: the caller's ``Cache-Control`` (REST header, gRPC metadata); None: the request
    #: parameter ``cache_control``, if any (core/serving/caching.py)
    cache_control: str | None = None
    #: a node's gateway says it checked the inputs for anomalies (gRPC metadata
    #: ``modelgate-screened``); believed of a gateway's call only (core/gateway/node_calls.py)
    screened: bool = False
    #: a caller waits for the answer; False for work that can wait (a job's items), which
    #: a gateway prefers to run on spot nodes (core/gateway/capacity.py)
    critical: bool = True


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    requested: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    #: the tightest rate limit that applied (limit, remaining, reset), for response headers
    rate_limit: dict[str, float] | None = None
    #: for a model that caches: "hit", "miss" or "stale" (an expired entry answered for a
    #: failing model); None: the model does not cache or the cache is off
    cache: str | None = None
    #: a cached answer: when it was computed (``time.time()``), for HTTP caches' ``Age``
    cached_at: float | None = None


class CompletedInference(NamedTuple):
    """A successful inference, as listeners see it: who asked, what, and the answer.

    ``inputs`` are the validated input arrays by name (batch dimension first). A named
    tuple rather than a frozen dataclass: as immutable, and built once per request for
    about half the cost (a frozen dataclass sets each field through ``object.__setattr__``)."""

    principal: Principal | None
    request: InferenceRequest
    response: InferenceResponse
    manifest: ModelManifest
    inputs: dict[str, np.ndarray[Any, Any]]


class InferenceListener(Protocol):
    """Told of each successful inference, on the request path, after the answer is built.

    ``completed`` must not block or do I/O: hand the work to a background task. It sits
    beside :class:`CompletedInference`, the one thing it is handed (monitoring, feedback
    and payload logging implement it)."""

    def completed(self, inference: CompletedInference) -> None: ...
