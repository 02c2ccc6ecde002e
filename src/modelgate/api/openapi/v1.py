"""The ``/v1`` bodies (OpenAI's models and embeddings, modelgate's feedback and jobs) and
OAuth's, as JSON Schema for the OpenAPI document only.

As with ``oip.py``, the routes decode by hand (``api/openai/embeddings.py``,
``api/rest/feedback.py``, ``api/rest/jobs.py``, ``api/rest/oauth.py``); the limits below
are the decoders' own constants, and ``tests/api/test_openapi_schemas.py`` checks that the
decoders and these schemas accept and refuse the same examples.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from modelgate.api.openapi.oip import InferenceRequest
from modelgate.api.rest.feedback import MAX_ITEMS, MAX_LABELS
from modelgate.core.jobs.jobs import JobState
from modelgate.core.jobs.service import MAX_PRIORITY
from modelgate.core.monitoring.feedback import MAX_LABEL
from modelgate.core.monitoring.feedback_recorder import MAX_REQUEST_ID
from modelgate.core.pipeline.embeddings import MAX_INPUTS

__all__ = [
    "EmbeddingRequest",
    "EmbeddingResponse",
    "FeedbackRequest",
    "FeedbackResponse",
    "Job",
    "JobList",
    "JobRequest",
    "JobResultList",
    "JsonWebKeySet",
    "Model",
    "ModelList",
    "OAuthError",
    "OpenAIError",
    "TokenRequest",
    "TokenResponse",
]

_OPEN = ConfigDict(extra="allow")
_CLOSED = ConfigDict(extra="forbid")
Label = Annotated[int, Field(ge=0, le=MAX_LABEL, description="A class index.")]
RequestId = Annotated[
    str,
    Field(min_length=1, max_length=MAX_REQUEST_ID, description="The `x-request-id` answered."),
]


class OpenAIErrorBody(BaseModel):
    model_config = _OPEN
    message: str
    type: str = Field(description="`invalid_request_error`, `server_error`, ...")
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """The error shape of every ``/v1`` route (OpenAI's)."""

    model_config = _OPEN
    error: OpenAIErrorBody


class Model(BaseModel):
    model_config = _OPEN
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    context_length: int | None = Field(
        default=None, description="An embedding model's context in tokens, specials included."
    )
    max_input_tokens: int | None = Field(
        default=None, description="The most tokens one input may have, once the model is loaded."
    )


class ModelList(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    data: list[Model]


NonEmptyText = Annotated[str, Field(min_length=1)]


class EmbeddingRequest(BaseModel):
    # `consent` and `log_payload` are read too (payload logging), and `explain`: true is
    # refused by every embedding model (docs/explanations.md), false asks nothing
    model_config = _OPEN
    model: Annotated[str, Field(min_length=1)]
    input: (
        NonEmptyText
        | Annotated[list[NonEmptyText], Field(min_length=1, max_length=MAX_INPUTS)]
        | Annotated[list[int], Field(min_length=1, max_length=MAX_INPUTS)]
        | Annotated[
            list[Annotated[list[int], Field(min_length=1)]],
            Field(min_length=1, max_length=MAX_INPUTS),
        ]
    ) = Field(
        description=(
            "A text, a list of texts, one input as the model's token ids, or a list of such"
            " inputs (docs/openai.md). Ids outside the model's vocabulary are refused."
        )
    )
    truncate: bool | None = Field(
        default=None,
        description=(
            "Cut inputs over the model's context instead of refusing them; absent: the"
            " manifest's `limits.truncate` decides (refuse by default)."
        ),
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        default=None, description="Fewer dimensions, if the model allows."
    )
    user: str | None = Field(default=None, description="The data subject (payload logging).")


class Embedding(BaseModel):
    model_config = _OPEN
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian FP32.")


class EmbeddingUsage(BaseModel):
    model_config = _OPEN
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class FeedbackLabel(BaseModel):
    """The label of one row of an earlier request."""

    model_config = _CLOSED
    request_id: RequestId
    label: Label
    row: Annotated[int, Field(ge=0, le=MAX_LABELS)] = 0


class FeedbackLabels(BaseModel):
    """A label for each row of an earlier request."""

    model_config = _CLOSED
    request_id: RequestId
    labels: Annotated[list[Label], Field(min_length=1, max_length=MAX_LABELS)]


class FeedbackBatch(BaseModel):
    """Several items, all accepted or none."""

    model_config = _CLOSED
    items: Annotated[
        list[FeedbackLabel | FeedbackLabels], Field(min_length=1, max_length=MAX_ITEMS)
    ]


class FeedbackRequest(RootModel[FeedbackLabel | FeedbackLabels | FeedbackBatch]):
    pass


class FeedbackResponse(BaseModel):
    model_config = _OPEN
    accepted: int = Field(description="The rows labelled.")


class JobRequest(BaseModel):
    """One inference (`request`) or a batch (`requests`), run in the background."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["request"]}, {"required": ["requests"]}]},
    )
    model: Annotated[str, Field(min_length=1, max_length=256)]
    version: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    request: InferenceRequest | None = None
    requests: Annotated[list[InferenceRequest], Field(min_length=1)] | None = None
    priority: Annotated[int, Field(ge=0, le=MAX_PRIORITY)] = 0
    webhook_url: str | None = Field(
        default=None, description="Called (POST, signed) when the job ends; a public https URL."
    )


class JobProgress(BaseModel):
    model_config = _OPEN
    total: int
    completed: int
    failed: int


class Job(BaseModel):
    model_config = _OPEN
    id: str
    object: Literal["job"]
    model: str
    version: str | None
    status: JobState
    priority: int
    progress: JobProgress
    attempts: int
    max_attempts: int
    error: str | None
    created_at: int = Field(description="Unix seconds.")
    started_at: int | None
    finished_at: int | None
    webhook_url: str | None
    idempotency_key: str | None


class JobList(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    data: list[Job]
    first_id: str | None
    last_id: str | None
    has_more: bool


class JobResult(BaseModel):
    model_config = _OPEN
    index: int
    status: Literal["ok", "error"]
    response: dict[str, Any] | None = Field(default=None, description="An OIP response body.")
    error: dict[str, Any] | None = None


class JobResultList(BaseModel):
    model_config = _OPEN
    object: Literal["list"]
    job_id: str
    status: JobState
    data: list[JobResult]
    has_more: bool
    next_after: int = Field(description="Pass as `after` for the next page.")


class TokenRequest(BaseModel):
    """OAuth2 client credentials (RFC 6749 4.4); the client may authenticate with HTTP Basic
    instead of `client_id` and `client_secret`."""

    model_config = _OPEN
    grant_type: Literal["client_credentials"]
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = Field(default=None, description="Space-separated; at most the key's.")


class TokenResponse(BaseModel):
    model_config = _OPEN
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str


class OAuthError(BaseModel):
    """RFC 6749's error shape."""

    model_config = _OPEN
    error: str
    error_description: str


class JsonWebKeySet(BaseModel):
    model_config = _OPEN
    keys: list[dict[str, Any]]
