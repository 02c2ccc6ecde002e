"""modelgate's Python client: ``Client`` and ``AsyncClient`` for OIP v2 inference (numpy
in and out, binary tensors by default), embeddings, asynchronous jobs, feedback, usage,
deployments, model metadata and health; retries within a budget, timeouts on every call,
and :mod:`modelgate_client.testing` for tests without a server.

The exceptions form one tree, drawn in the docstring of ``modelgate_client._errors``:
``ModelgateError`` → ``APIError`` (with ``status``, ``code``, ``message``) →
``BadRequestError``, ``AuthenticationError``, ``PermissionDeniedError``, ``NotFoundError``,
``ConflictError``, ``RateLimitError``, ``ServerError``; and ``TimeoutError`` and
``ConnectionError`` beside ``APIError``.
"""

from __future__ import annotations

from modelgate_client._async_client import AsyncClient, AsyncDeployments, AsyncJobs
from modelgate_client._client import Client, Deployments, Jobs
from modelgate_client._config import DEFAULT_TIMEOUT
from modelgate_client._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ConnectionError,
    ModelgateError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TimeoutError,
)
from modelgate_client._models import (
    Deployment,
    Embeddings,
    Explanation,
    FeedbackItem,
    InferResult,
    Job,
    JobPage,
    JobProgress,
    JobResult,
    ModelInfo,
    ModelMetadata,
    Quota,
    TensorMetadata,
    UsageReport,
    UsageRow,
)
from modelgate_client._operations import job_request
from modelgate_client._progress import TextProgress
from modelgate_client._retry import RetryPolicy
from modelgate_client._version import __version__

__all__ = [
    "DEFAULT_TIMEOUT",
    "APIError",
    "AsyncClient",
    "AsyncDeployments",
    "AsyncJobs",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "ConnectionError",
    "Deployment",
    "Deployments",
    "Embeddings",
    "Explanation",
    "FeedbackItem",
    "InferResult",
    "Job",
    "JobPage",
    "JobProgress",
    "JobResult",
    "Jobs",
    "ModelInfo",
    "ModelMetadata",
    "ModelgateError",
    "NotFoundError",
    "PermissionDeniedError",
    "Quota",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "TensorMetadata",
    "TextProgress",
    "TimeoutError",
    "UsageReport",
    "UsageRow",
    "__version__",
    "job_request",
]
