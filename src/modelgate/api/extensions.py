"""Triton's protocol extensions that modelgate does not serve, refused in the same words on
REST and gRPC: UNSUPPORTED, which REST answers 501 ``{"error": ...}`` (Triton's own mapping
of UNSUPPORTED) and gRPC UNIMPLEMENTED, so tritonclient raises ``InferenceServerException``
with the message on either protocol. None of them is listed in server metadata's
``extensions``, as Triton leaves out an extension it was built without."""

from __future__ import annotations

from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "CUDA_SHARED_MEMORY",
    "LOGGING",
    "SYSTEM_SHARED_MEMORY",
    "TRACE",
    "UPLOADED_FILES",
    "unsupported_extension",
]

#: each extension's name, as the message says it, and what to do instead
SYSTEM_SHARED_MEMORY = (
    "system shared memory",
    "send tensors in the request (binary tensor data on REST, raw_input_contents on gRPC)",
)
CUDA_SHARED_MEMORY = (
    "CUDA shared memory",
    "send tensors in the request (binary tensor data on REST, raw_input_contents on gRPC)",
)
TRACE = (
    "the trace extension",
    "modelgate traces with OpenTelemetry, set by MODELGATE_OTLP_ENDPOINT (docs/operations.md)",
)
LOGGING = ("the logging extension", "the log level is MODELGATE_LOG_LEVEL, set at start")
UPLOADED_FILES = (
    "loading a model from uploaded files ('file:' parameters)",
    "put the model's files in the model repository and load it by name",
)


def unsupported_extension(extension: tuple[str, str]) -> ModelgateError:
    feature, instead = extension
    return ModelgateError(
        ErrorKind.UNSUPPORTED, f"{feature} is not supported by modelgate; {instead}"
    )
