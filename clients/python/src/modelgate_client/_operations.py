"""Every operation as data: what to send (a :class:`Call`) and how to read the answer.

``Client`` and ``AsyncClient`` only send calls and hand their answers to ``parse``, so the
two cannot drift apart: an operation is written once, here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from modelgate_client._models import (
    Deployment,
    Embeddings,
    FeedbackItem,
    InferResult,
    Job,
    JobPage,
    JobResult,
    ModelInfo,
    ModelMetadata,
    Quota,
    UsageReport,
    UsageRow,
)

if TYPE_CHECKING:
    from modelgate_client._tensors import TensorCodec

__all__ = ["Call", "new_idempotency_key"]

T = TypeVar("T")

#: methods whose repetition changes nothing more than the first call did
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP request of an operation and the reader of its (successful) answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str | int] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: the statuses that are an answer, not an error (e.g. 503 for readiness)
    ok_statuses: frozenset[int] = frozenset()
    #: a POST whose repetition changes nothing more (cancelling a job)
    idempotent: bool = False

    @property
    def keyed(self) -> bool:
        """It carries an ``Idempotency-Key``."""
        return "Idempotency-Key" in self.headers

    @property
    def safe(self) -> bool:
        """Safe to send again after any transient failure (see ``_retry``)."""
        return self.idempotent or self.method in _IDEMPOTENT_METHODS or self.keyed


def new_idempotency_key() -> str:
    """A fresh key for one side-effecting call (kept across its retries)."""
    return f"mgc-{uuid.uuid4().hex}"


def _segment(value: str | int) -> str:
    return quote(str(value), safe="")


def _json(response: httpx.Response) -> Any:
    return json.loads(response.content)


def _model_path(model: str, version: str | int | None) -> str:
    path = f"/v2/models/{_segment(model)}"
    return path if version is None else f"{path}/versions/{_segment(version)}"


def tensor_codec() -> TensorCodec:
    """The numpy codec, imported on first use: the rest of the client works without numpy."""
    try:
        from modelgate_client._tensors import TensorCodec
    except ModuleNotFoundError as exc:
        if exc.name != "numpy":
            raise
        raise ImportError("infer needs numpy: pip install 'modelgate-client[numpy]'") from None
    return TensorCodec()


# -- inference and embeddings -----------------------------------------------------------------


def infer(
    model: str,
    inputs: Mapping[str, Any],
    *,
    version: str | int | None,
    outputs: Sequence[str] | None,
    binary: bool,
    request_id: str | None,
    parameters: Mapping[str, Any] | None,
    timeout_ms: int | None,
) -> Call[InferResult]:
    codec = tensor_codec()
    body, header_length = codec.encode_request(
        inputs, outputs=outputs, binary=binary, request_id=request_id, parameters=parameters
    )
    headers = {"Content-Type": "application/json"}
    if header_length is not None:
        headers["Content-Type"] = "application/octet-stream"
        headers["Inference-Header-Content-Length"] = str(header_length)
    if timeout_ms is not None:  # the server drops the request once the caller gave up
        headers["X-Request-Timeout-Ms"] = str(timeout_ms)

    def parse(response: httpx.Response) -> InferResult:
        length = response.headers.get("inference-header-content-length")
        result = codec.decode_response(response.content, None if length is None else int(length))
        return InferResult(
            model_name=result.model_name,
            model_version=result.model_version,
            outputs=result.outputs,
            datatypes=result.datatypes,
            id=result.id,
            parameters=result.parameters,
            request_id=response.headers.get("x-request-id"),
            headers=dict(response.headers),
        )

    path = f"{_model_path(model, version)}/infer"
    return Call("POST", path, parse, content=body, headers=headers)


def embeddings(
    model: str, input: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]], **extra: Any
) -> Call[Embeddings]:
    body = {"model": model, "input": input, "encoding_format": "float"}
    body.update({k: v for k, v in extra.items() if v is not None})
    return Call("POST", "/v1/embeddings", lambda r: Embeddings.from_json(_json(r)), json=body)


# -- models and health ------------------------------------------------------------------------


def models() -> Call[list[ModelInfo]]:
    return Call("GET", "/v1/models", lambda r: [ModelInfo.from_json(d) for d in _json(r)["data"]])


def model_metadata(model: str, version: str | int | None) -> Call[ModelMetadata]:
    return Call("GET", _model_path(model, version), lambda r: ModelMetadata.from_json(_json(r)))


def model_ready(model: str, version: str | int | None) -> Call[bool]:
    path = f"{_model_path(model, version)}/ready"
    return Call("GET", path, lambda r: r.status_code == 200, ok_statuses=frozenset({503}))


def server_metadata() -> Call[dict[str, Any]]:
    return Call("GET", "/v2", _json)


def health(which: str) -> Call[bool]:
    ok = frozenset({503})  # "not ready" is an answer here, not an error
    return Call("GET", f"/v2/health/{which}", lambda r: r.status_code == 200, ok_statuses=ok)


# -- feedback and usage ------------------------------------------------------------------------


def feedback(items: Sequence[FeedbackItem]) -> Call[int]:
    if not items:
        raise ValueError("feedback needs at least one item")
    body = items[0].to_json() if len(items) == 1 else {"items": [i.to_json() for i in items]}
    return Call("POST", "/v1/feedback", lambda r: int(_json(r)["accepted"]), json=body)


def usage(**query: str | None) -> Call[UsageReport]:
    params = {k: v for k, v in query.items() if v is not None}

    def parse(response: httpx.Response) -> UsageReport:
        doc = _json(response)
        return UsageReport(str(doc["currency"]), [UsageRow.from_json(r) for r in doc["rows"]])

    return Call("GET", "/admin/usage", parse, params=params)


def quotas(tenant_id: str) -> Call[list[Quota]]:
    path = f"/admin/tenants/{_segment(tenant_id)}/quotas"
    return Call("GET", path, lambda r: [Quota.from_json(q) for q in _json(r)])


# -- jobs --------------------------------------------------------------------------------------


def job_submit(
    model: str,
    requests: Sequence[Mapping[str, Any]],
    *,
    version: str | int | None,
    priority: int | None,
    webhook_url: str | None,
    idempotency_key: str | None,
) -> Call[Job]:
    if not requests:
        raise ValueError("a job needs at least one request")
    body: dict[str, Any] = {"model": model, "requests": [dict(r) for r in requests]}
    if version is not None:
        body["version"] = str(version)
    if priority is not None:
        body["priority"] = priority
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
    return Call("POST", "/v1/jobs", _job, json=body, headers=headers)


def job_request(inputs: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
    """An OIP request document (tensors as JSON ``data``) for a job, from arrays."""
    body, _ = tensor_codec().encode_request(inputs, outputs=outputs, binary=False)
    document: dict[str, Any] = json.loads(body)
    return document


def job_get(job_id: str) -> Call[Job]:
    return Call("GET", f"/v1/jobs/{_segment(job_id)}", _job)


def job_cancel(job_id: str) -> Call[Job]:
    # cancelling twice leaves the job as cancelling once did: safe to send again
    return Call("POST", f"/v1/jobs/{_segment(job_id)}/cancel", _job, idempotent=True)


def job_list(
    *, status: str | None, model: str | None, after: str | None, limit: int
) -> Call[JobPage]:
    params: dict[str, str | int] = {"limit": limit}
    for name, value in (("status", status), ("model", model), ("after", after)):
        if value is not None:
            params[name] = value

    def parse(response: httpx.Response) -> JobPage:
        doc = _json(response)
        return JobPage([Job.from_json(j) for j in doc["data"]], doc["has_more"], doc["last_id"])

    return Call("GET", "/v1/jobs", parse, params=params)


def job_results(job_id: str, *, after: int, limit: int) -> Call[tuple[list[JobResult], int, bool]]:
    """A page of results: (results, next_after, has_more)."""

    def parse(response: httpx.Response) -> tuple[list[JobResult], int, bool]:
        doc = _json(response)
        results = [JobResult.from_json(d) for d in doc["data"]]
        return results, int(doc["next_after"]), bool(doc["has_more"])

    params = {"after": after, "limit": limit}
    return Call("GET", f"/v1/jobs/{_segment(job_id)}/results", parse, params=params)


def _job(response: httpx.Response) -> Job:
    return Job.from_json(_json(response))


# -- deployments -------------------------------------------------------------------------------


def _deployment_path(model: str) -> str:
    return f"/admin/models/{_segment(model)}/deployment"


def _deployment(response: httpx.Response) -> Deployment:
    return Deployment.from_json(_json(response))


def deployment_get(model: str) -> Call[Deployment]:
    return Call("GET", _deployment_path(model), _deployment)


def deployment_put(model: str, spec: Mapping[str, Any]) -> Call[Deployment]:
    return Call("PUT", _deployment_path(model), _deployment, json=dict(spec))


def deployment_action(
    model: str, action: str, body: Mapping[str, Any] | None, idempotency_key: str | None
) -> Call[Deployment]:
    headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
    path = f"{_deployment_path(model)}/{action}"
    return Call("POST", path, _deployment, json=body, headers=headers)
