"""What the OpenAPI document says of each REST route the route table dispatches.

Keyed as the route table (``api/rest/routes.py``) is: template, then method. The document
(``document.py``) walks the table of the app it describes and looks every row up here; a row
that is neither here, in :data:`EXPANDED` nor in :data:`UNDOCUMENTED` fails the document's
generation, so a route cannot be added undocumented. Operation ids are the names a generated
SDK gives its methods: stable, camelCase, never derived from a Python function name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from modelgate.api.openapi import oip, v1

__all__ = [
    "EXPANDED",
    "FRONT",
    "OPERATIONS",
    "UNDOCUMENTED",
    "VERSIONED",
    "Operation",
]


@dataclass(frozen=True, slots=True)
class Operation:
    operation_id: str
    summary: str
    tag: str
    #: the 200 answer's JSON body
    response: type[BaseModel] | None
    #: the error statuses it may answer besides 401 (where a credential is asked for)
    errors: tuple[int, ...] = ()
    request: type[BaseModel] | None = None
    #: the body of every error answer
    error: type[BaseModel] = oip.OipError
    #: answered without a credential whatever ``MODELGATE_AUTH`` says
    public: bool = False
    #: the id of the same operation on ``/versions/{version}`` (model routes only)
    versioned_id: str | None = None
    description: str = ""
    #: statuses that answer the 200's body too (a readiness probe's 503)
    same_body: tuple[int, ...] = field(default=())


_READ = (403, 404, 429, 503)
_INFER = (400, 403, 404, 409, 413, 415, 429, 501, 503, 504)
_REPOSITORY = (400, 403, 404, 409, 413, 415, 429, 503)
_V1 = v1.OpenAIError

OPERATIONS: dict[str, dict[str, Operation]] = {
    "/v2": {
        "GET": Operation(
            "getServerMetadata",
            "The server's name, version and extensions",
            "health",
            oip.ServerMetadataResponse,
            public=True,
        ),
    },
    "/v2/health/live": {
        "GET": Operation(
            "getServerLive", "Liveness", "health", oip.ServerLiveResponse, public=True
        ),
    },
    "/v2/health/ready": {
        "GET": Operation(
            "getServerReady",
            "Readiness: every model loaded and every check passing",
            "health",
            oip.ServerReadyResponse,
            (503,),
            public=True,
            same_body=(503,),
        ),
    },
    "/v2/models/stats": {
        "GET": Operation(
            "getAllModelStatistics",
            "Statistics of every model the caller may see",
            "models",
            oip.ModelStatisticsResponse,
            (403, 429, 503),
        ),
    },
    "/v2/models/{model}": {
        "GET": Operation(
            "getModelMetadata",
            "A model's metadata: versions, platform, inputs, outputs",
            "models",
            oip.ModelMetadataResponse,
            _READ,
            versioned_id="getModelVersionMetadata",
        ),
    },
    "/v2/models/{model}/ready": {
        "GET": Operation(
            "getModelReady",
            "Whether a model (version) is loaded and serving",
            "models",
            oip.ModelReadyResponse,
            _READ,
            versioned_id="getModelVersionReady",
            same_body=(503,),
        ),
    },
    "/v2/models/{model}/config": {
        "GET": Operation(
            "getModelConfig",
            "A model's configuration (Triton's JSON form)",
            "models",
            oip.ModelConfigResponse,
            _READ,
            versioned_id="getModelVersionConfig",
        ),
    },
    "/v2/models/{model}/stats": {
        "GET": Operation(
            "getModelStatistics",
            "A model's statistics (Triton's shape)",
            "models",
            oip.ModelStatisticsResponse,
            _READ,
            versioned_id="getModelVersionStatistics",
        ),
    },
    "/v2/models/{model}/infer": {
        "POST": Operation(
            "inferModel",
            "Run an inference",
            "inference",
            oip.InferenceResponse,
            _INFER,
            oip.InferenceRequest,
            versioned_id="inferModelVersion",
            description="JSON, or binary tensor data: `application/octet-stream` whose first "
            "`Inference-Header-Content-Length` bytes are the JSON request. The answer is "
            "binary the same way when an output asks for `binary_data`.",
        ),
        "GET": Operation(
            "inferModelCached",
            "Run an inference over GET, for HTTP caches",
            "inference",
            oip.InferenceResponse,
            (304, 405, *_INFER),
            versioned_id="inferModelVersionCached",
            description="Only for models whose manifest has a `cache` section (others answer "
            "405). `input` is the JSON request as base64url (docs/caching.md).",
        ),
    },
    "/v2/repository/index": {
        "POST": Operation(
            "getRepositoryIndex",
            "Every model in the repository and its state",
            "repository",
            oip.RepositoryIndexResponse,
            (400, 403, 413, 415, 429, 503),
            oip.RepositoryIndexRequest,
        ),
    },
    "/v2/repository/models/{model}/load": {
        "POST": Operation(
            "loadModel",
            "Load (or reload) a model",
            "repository",
            oip.RepositoryActionResponse,
            _REPOSITORY,
            oip.RepositoryLoadRequest,
        ),
    },
    "/v2/repository/models/{model}/unload": {
        "POST": Operation(
            "unloadModel",
            "Unload a model",
            "repository",
            oip.RepositoryActionResponse,
            _REPOSITORY,
        ),
    },
    "/v1/models": {
        "GET": Operation(
            "listModels",
            "The models the caller may use (OpenAI)",
            "openai",
            v1.ModelList,
            (403, 429, 503),
            error=_V1,
        ),
    },
    "/v1/models/{model}": {
        "GET": Operation(
            "retrieveModel",
            "One model (OpenAI)",
            "openai",
            v1.Model,
            (403, 404, 429, 503),
            error=_V1,
        ),
    },
    "/v1/embeddings": {
        "POST": Operation(
            "createEmbedding",
            "Embed texts (OpenAI)",
            "openai",
            v1.EmbeddingResponse,
            (400, 403, 404, 409, 413, 415, 429, 503, 504),
            v1.EmbeddingRequest,
            error=_V1,
        ),
    },
    "/v1/feedback": {
        "POST": Operation(
            "submitFeedback",
            "Ground truth for earlier predictions, by request id",
            "feedback",
            v1.FeedbackResponse,
            (400, 403, 404, 409, 413, 415, 429, 503),
            v1.FeedbackRequest,
            error=_V1,
        ),
    },
    "/metrics": {
        "GET": Operation(
            "getMetrics",
            "Prometheus metrics (text exposition format)",
            "metrics",
            None,
            (403, 429),
            description="Needs a credential with `models:read` only with "
            "`MODELGATE_METRICS_AUTH=true`.",
        ),
    },
}

#: a row whose handler routes the rest of the path itself: the paths it answers
EXPANDED: dict[str, dict[str, dict[str, Operation]]] = {
    "/v1/jobs/...": {
        "/v1/jobs": {
            "GET": Operation(
                "listJobs",
                "The caller's jobs, newest first",
                "jobs",
                v1.JobList,
                (400, 403, 429, 503),
                error=_V1,
            ),
            "POST": Operation(
                "createJob",
                "Submit an asynchronous job",
                "jobs",
                v1.Job,
                (400, 403, 404, 409, 413, 415, 429, 503),
                v1.JobRequest,
                error=_V1,
                description="JSON, or JSON lines (`application/jsonl`: one OIP request a "
                "line, `model`, `version`, `priority` and `webhook_url` in the query). "
                "`Idempotency-Key` makes a retry answer the job the first request made.",
            ),
        },
        "/v1/jobs/{job_id}": {
            "GET": Operation(
                "retrieveJob",
                "A job's status and progress",
                "jobs",
                v1.Job,
                (403, 404, 429, 503),
                error=_V1,
            ),
        },
        "/v1/jobs/{job_id}/results": {
            "GET": Operation(
                "listJobResults",
                "A job's item results, in order",
                "jobs",
                v1.JobResultList,
                (400, 403, 404, 429, 503),
                error=_V1,
            ),
        },
        "/v1/jobs/{job_id}/cancel": {
            "POST": Operation(
                "cancelJob",
                "Cancel a queued or running job",
                "jobs",
                v1.Job,
                (403, 404, 409, 429, 503),
                error=_V1,
            ),
        },
    },
}

#: rows that name no operation a client can use: catch-alls that only answer 404 (after
#: authenticating, so that they tell a caller without a credential nothing), and Triton
#: extensions that only answer 501; the document's description lists those of its server
UNDOCUMENTED = {
    "/v2/models/{model}/{action}": "GET of an unknown model action: 404",
    "/v2/repository/...": "POST of an unknown repository path: 404",
    # Triton's extensions modelgate does not serve (api/rest/extensions.py, when present):
    # every method and path below each answers 501, which is no operation a client can use
    "/v2/systemsharedmemory/...": "Triton's system shared memory: 501, not served",
    "/v2/cudasharedmemory/...": "Triton's CUDA shared memory: 501, not served",
    "/v2/trace/setting": "Triton's trace settings: 501, not served",
    "/v2/models/{model}/trace/setting": "Triton's model trace settings: 501, not served",
    "/v2/logging": "Triton's log settings: 501, not served",
}

#: the model routes also answered on ``/v2/models/{model}/versions/{version}...``
VERSIONED = "/v2/models/{model}"

#: the routes answered before the route table (api/rest/app.py), when served
FRONT: dict[str, dict[str, Operation]] = {
    "/oauth/token": {
        "POST": Operation(
            "createToken",
            "A JWT for an API key (OAuth2 client credentials)",
            "oauth",
            v1.TokenResponse,
            (400, 401, 413, 415, 429),
            v1.TokenRequest,
            error=v1.OAuthError,
            public=True,
        ),
    },
    "/.well-known/jwks.json": {
        "GET": Operation(
            "getJsonWebKeySet",
            "The public keys that verify modelgate's tokens",
            "oauth",
            v1.JsonWebKeySet,
            public=True,
        ),
    },
    "/openapi.json": {
        "GET": Operation(
            "getOpenApiDocument",
            "This document",
            "openapi",
            None,
            public=True,
        ),
    },
    "/dashboard": {
        "GET": Operation(
            "getDashboard",
            "The live dashboard (an HTML page)",
            "dashboard",
            None,
            public=True,
            description="The page and its assets (`/dashboard/static/...`) need no "
            "credential: they hold no data. The page asks for an API key and reads the JSON "
            "APIs with it, whose scopes decide what it shows (docs/dashboard.md).",
        ),
    },
}
