"""OIP v2 REST bodies as JSON Schema, for the OpenAPI document only.

The routes decode these bodies by hand (``api/oip_codec.py``, ``api/rest/repository.py``):
the hot path does not pay for a validation library. These models say what the codecs
accept and the handlers answer; ``tests/api/test_openapi_schemas.py`` feeds the codecs'
own accepted and refused examples through both, so the two cannot drift apart silently.
Response models allow fields they do not name (a server may add some, as Triton does);
request models say what is read.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from modelgate.core.serving.tensors import DATATYPES

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "ModelConfigResponse",
    "ModelMetadataResponse",
    "ModelReadyResponse",
    "ModelStatisticsResponse",
    "OipError",
    "RepositoryActionResponse",
    "RepositoryIndexRequest",
    "RepositoryIndexResponse",
    "RepositoryLoadRequest",
    "RepositoryModel",
    "ServerLiveResponse",
    "ServerMetadataResponse",
    "ServerReadyResponse",
]

_OPEN = ConfigDict(extra="allow")
Datatype = Annotated[
    str,
    Field(description="The tensor's OIP datatype.", json_schema_extra={"enum": sorted(DATATYPES)}),
]
Shape = Annotated[list[Annotated[int, Field(ge=0)]], Field(description="The tensor's shape.")]
Parameters = Annotated[
    dict[str, Any], Field(description="Named parameters: strings, numbers or booleans.")
]


class OipError(BaseModel):
    """The error shape of ``/v2`` and ``/metrics``."""

    model_config = _OPEN
    error: str = Field(description="What went wrong.")


class ServerMetadataResponse(BaseModel):
    model_config = _OPEN
    name: str
    version: str
    extensions: list[str] = Field(description="The OIP and Triton extensions served.")


class ServerLiveResponse(BaseModel):
    model_config = _OPEN
    live: bool


class ServerReadyResponse(BaseModel):
    model_config = _OPEN
    ready: bool


class ModelReadyResponse(BaseModel):
    model_config = _OPEN
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    model_config = _OPEN
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="-1 marks a dimension of any size.")


class ModelMetadataResponse(BaseModel):
    model_config = _OPEN
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelConfigResponse(BaseModel):
    """Triton's model configuration, JSON form (the ``model_configuration`` extension)."""

    model_config = _OPEN
    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]


class ModelVersionStatistics(BaseModel):
    """Triton's ``model_stats`` entry of one loaded version (durations in ns)."""

    model_config = _OPEN
    name: str
    version: str
    last_inference: int
    inference_count: int
    execution_count: int
    inference_stats: dict[str, Any]


class ModelStatisticsResponse(BaseModel):
    model_config = _OPEN
    model_stats: list[ModelVersionStatistics]


class RequestInput(BaseModel):
    model_config = _OPEN
    name: Annotated[str, Field(min_length=1)]
    shape: Shape
    datatype: Datatype
    parameters: Parameters | None = Field(
        default=None,
        description="`binary_data_size`: the input's bytes follow the JSON header "
        "(binary tensor data); `data` is then absent.",
    )
    data: Any = Field(
        default=None,
        description="The elements, flat or nested in row-major order: numbers, booleans, "
        "or strings for BYTES.",
    )


class RequestOutput(BaseModel):
    model_config = _OPEN
    name: Annotated[str, Field(min_length=1)]
    parameters: Parameters | None = Field(
        default=None, description="`binary_data: true` asks for the output as binary data."
    )


class InferenceRequest(BaseModel):
    """An OIP v2 inference request. With binary tensor data (Triton's extension, the
    default of `tritonclient.http`), this JSON is the body's first
    `Inference-Header-Content-Length` bytes and the tensors follow."""

    model_config = _OPEN
    id: str | None = None
    parameters: Parameters | None = Field(
        default=None,
        description="E.g. `binary_data_output`, `timeout`, `classification`, "
        "`log_payload`, `subject`, `explain` (a boolean: per-feature attributions, as an "
        "output `<output>_attributions` and `explain_*` response parameters, for models "
        "whose manifest has an `explain` section; docs/explanations.md).",
    )
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    model_config = _OPEN
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any] | None = Field(
        default=None, description="Flat, row-major; absent when sent as binary data."
    )


class InferenceResponse(BaseModel):
    model_config = _OPEN
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class RepositoryIndexRequest(BaseModel):
    model_config = _OPEN
    ready: bool | None = Field(default=None, description="Only the models ready to serve.")


class RepositoryModel(BaseModel):
    model_config = _OPEN
    name: str
    version: str | None = None
    state: str = Field(description="READY, LOADING, UNAVAILABLE, ...")
    reason: str | None = None


class RepositoryIndexResponse(RootModel[list[RepositoryModel]]):
    """Every model (version) in the repository and its state, Triton's index shape."""


class RepositoryLoadParameters(BaseModel):
    model_config = _OPEN
    config: dict[str, Any] | str | None = Field(
        default=None,
        description="A manifest override (a JSON object, or its text), as Triton's "
        "`load_model(config=...)` sends it.",
    )


class RepositoryLoadRequest(BaseModel):
    model_config = _OPEN
    parameters: RepositoryLoadParameters | None = None


class RepositoryActionResponse(BaseModel):
    """An empty object: the model was loaded or unloaded."""

    model_config = ConfigDict(extra="forbid")
