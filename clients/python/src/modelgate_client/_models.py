"""The typed answers of the client: frozen dataclasses read from the server's JSON.

Dataclasses, not pydantic: the server validates what it is sent, the client only reads what
it answers, and an SDK that pins pydantic collides with its users' own pydantic. Each model
keeps the server's document in ``raw``, so a field the server adds later is reachable before
the client knows it; unknown fields are ignored, missing optional ones are None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is needed only by `infer`: never imported here at run time
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "Deployment",
    "Embeddings",
    "Explanation",
    "FeedbackItem",
    "InferResult",
    "Job",
    "JobPage",
    "JobProgress",
    "JobResult",
    "ModelInfo",
    "ModelMetadata",
    "Quota",
    "TensorMetadata",
    "UsageReport",
    "UsageRow",
]

#: the states after which a job changes no more
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "dead"})


@dataclass(frozen=True, slots=True)
class InferResult:
    """An inference answer: the outputs as numpy arrays by name (BYTES outputs hold
    ``bytes`` objects), the model and version that answered, and the call's request id
    (``x-request-id``, the id ``feedback`` takes)."""

    model_name: str
    model_version: str
    outputs: dict[str, npt.NDArray[Any]]
    datatypes: dict[str, str]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        return self.outputs[name]

    @property
    def explanation(self) -> Explanation | None:
        """The attributions the call asked for with ``explain=True``; None without them."""
        return Explanation.from_result(self.outputs, self.parameters)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Per-feature attributions of one output column (docs/explanations.md):
    ``attributions[r, i]`` is feature i's part of row r, in the input's feature order
    (the model metadata's ``feature_names``), and for every row
    ``base_value + attributions[r].sum()`` is the output in ``link`` space (``logit``:
    log-odds of the ``target`` column of ``output``), within 1e-3."""

    attributions: npt.NDArray[Any]
    base_value: float
    #: "linear" (exact, for a model linear in link space) or "kernel_shap"
    method: str
    output: str
    #: the column explained (its label, else its index); None for a one-column output
    target: str | None
    link: str
    #: model rows the server ran to compute them
    evaluations: int
    #: KernelSHAP's coalitions per row; None for the linear method
    samples: int | None = None

    @classmethod
    def from_result(
        cls, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> Explanation | None:
        output = parameters.get("explain_output")
        if not isinstance(output, str) or f"{output}_attributions" not in outputs:
            return None
        samples = parameters.get("explain_samples")
        return cls(
            attributions=outputs[f"{output}_attributions"],
            base_value=float(parameters.get("explain_base_value", 0.0)),
            method=str(parameters.get("explain_method", "")),
            output=output,
            target=parameters.get("explain_target"),
            link=str(parameters.get("explain_link", "identity")),
            evaluations=int(parameters.get("explain_evaluations", 0)),
            samples=int(samples) if samples is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Embeddings:
    """``/v1/embeddings``: one vector per input, in input order."""

    model: str
    vectors: list[list[float]]
    prompt_tokens: int
    total_tokens: int
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Embeddings:
        data = sorted(doc.get("data", []), key=lambda d: d.get("index", 0))
        usage = doc.get("usage") or {}
        return cls(
            model=str(doc.get("model", "")),
            vectors=[list(d["embedding"]) for d in data],
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            total_tokens=int(usage.get("total_tokens", 0)),
            raw=dict(doc),
        )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the caller may use (``/v1/models``)."""

    id: str
    owned_by: str
    created: int

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ModelInfo:
        return cls(str(doc["id"]), str(doc.get("owned_by", "")), int(doc.get("created", 0)))


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """An input or output a model declares; -1 in ``shape`` is a free dimension."""

    name: str
    datatype: str
    shape: list[int]

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TensorMetadata:
        return cls(str(doc["name"]), str(doc["datatype"]), [int(d) for d in doc["shape"]])


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """OIP model metadata (``GET /v2/models/{model}[/versions/{version}]``)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ModelMetadata:
        return cls(
            name=str(doc["name"]),
            versions=[str(v) for v in doc.get("versions", [])],
            platform=str(doc.get("platform", "")),
            inputs=[TensorMetadata.from_json(t) for t in doc.get("inputs", [])],
            outputs=[TensorMetadata.from_json(t) for t in doc.get("outputs", [])],
            raw=dict(doc),
        )


@dataclass(frozen=True, slots=True)
class JobProgress:
    total: int
    completed: int
    failed: int

    @property
    def done(self) -> int:
        """Items finished either way."""
        return self.completed + self.failed


@dataclass(frozen=True, slots=True)
class Job:
    """An asynchronous job (``/v1/jobs/{id}``); times are Unix seconds."""

    id: str
    model: str
    version: str | None
    status: str
    priority: int
    progress: JobProgress
    attempts: int
    error: Any
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    idempotency_key: str | None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def finished(self) -> bool:
        """True once the job changes no more (succeeded, failed, cancelled or dead)."""
        return self.status in TERMINAL_STATES

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Job:
        progress = doc.get("progress") or {}
        return cls(
            id=str(doc["id"]),
            model=str(doc.get("model", "")),
            version=None if doc.get("version") is None else str(doc["version"]),
            status=str(doc["status"]),
            priority=int(doc.get("priority", 0)),
            progress=JobProgress(
                int(progress.get("total", 0)),
                int(progress.get("completed", 0)),
                int(progress.get("failed", 0)),
            ),
            attempts=int(doc.get("attempts", 0)),
            error=doc.get("error"),
            created_at=doc.get("created_at"),
            started_at=doc.get("started_at"),
            finished_at=doc.get("finished_at"),
            idempotency_key=doc.get("idempotency_key"),
            raw=dict(doc),
        )


@dataclass(frozen=True, slots=True)
class JobResult:
    """One item's result: ``response`` (an OIP answer document, tensors as JSON ``data``)
    when ``ok``, else ``error`` (``{"code", "message"}``)."""

    index: int
    ok: bool
    response: dict[str, Any] | None
    error: dict[str, Any] | None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> JobResult:
        ok = doc.get("status") == "ok"
        return cls(int(doc["index"]), ok, doc.get("response"), doc.get("error"))


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of ``/v1/jobs``."""

    jobs: list[Job]
    has_more: bool
    last_id: str | None


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """Ground truth for an earlier prediction: ``label`` for row ``row`` of the request
    ``request_id`` (its ``x-request-id``), or ``labels``, one per row."""

    request_id: str
    label: int | None = None
    labels: list[int] | None = None
    row: int | None = None

    def to_json(self) -> dict[str, Any]:
        if (self.label is None) == (self.labels is None):
            raise ValueError("give either label or labels")
        doc: dict[str, Any] = {"request_id": self.request_id}
        if self.labels is not None:
            doc["labels"] = list(self.labels)
        else:
            doc["label"] = self.label
            if self.row is not None:
                doc["row"] = self.row
        return doc


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One line of a usage report; the columns not grouped by are None."""

    day: str | None
    tenant_id: str | None
    key_id: str | None
    model: str | None
    version: str | None
    requests: int
    errors: int
    rows: int
    tokens: int
    latency_ms_avg: float
    latency_ms_max: float
    compute_seconds: float
    cost: float
    #: rows explained (``explain=True``); 0 from a server that does not report them
    explanations: int = 0

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> UsageRow:
        names = ("requests", "errors", "rows", "tokens", "explanations")
        counts = {n: int(doc.get(n) or 0) for n in names}
        return cls(
            day=doc.get("day"),
            tenant_id=doc.get("tenant_id"),
            key_id=doc.get("key_id"),
            model=doc.get("model"),
            version=doc.get("version"),
            latency_ms_avg=float(doc.get("latency_ms_avg") or 0.0),
            latency_ms_max=float(doc.get("latency_ms_max") or 0.0),
            compute_seconds=float(doc.get("compute_seconds") or 0.0),
            cost=float(doc.get("cost") or 0.0),
            **counts,
        )


@dataclass(frozen=True, slots=True)
class UsageReport:
    """``/admin/usage``: rows and the currency their cost is in."""

    currency: str
    rows: list[UsageRow]

    @property
    def total_cost(self) -> float:
        return sum(r.cost for r in self.rows)

    @property
    def total_requests(self) -> int:
        return sum(r.requests for r in self.rows)


@dataclass(frozen=True, slots=True)
class Quota:
    """A tenant's quota and how much of it is used (``/admin/tenants/{id}/quotas``)."""

    quota: str
    limit: int
    used: int
    remaining: int
    resets_at: str

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Quota:
        return cls(
            str(doc["quota"]),
            int(doc["limit"]),
            int(doc["used"]),
            int(doc["remaining"]),
            str(doc["resets_at"]),
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model's deployment: the default version, a traffic split or a canary, a shadow, and
    the share each version gets now (``weights``: ``{"version", "percent", "role"}``)."""

    model: str
    revision: int
    stage: str
    default_version: int
    weights: list[dict[str, Any]]
    split: list[dict[str, Any]]
    canary: dict[str, Any] | None
    shadow: dict[str, Any] | None
    updated_at: str | None
    updated_by: str | None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Deployment:
        return cls(
            model=str(doc["model"]),
            revision=int(doc.get("revision") or 0),
            stage=str(doc.get("stage", "")),
            default_version=int(doc["default_version"]),
            weights=list(doc.get("weights", [])),
            split=list(doc.get("split", [])),
            canary=doc.get("canary"),
            shadow=doc.get("shadow"),
            updated_at=doc.get("updated_at"),
            updated_by=doc.get("updated_by"),
            raw=dict(doc),
        )
