"""``/v1/models`` and ``/v1/embeddings`` in OpenAI's request, response and error shapes."""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np
import orjson

from modelgate.api.openai.embedding_input import embedding_input, truncate_option
from modelgate.core.access.identity import Principal
from modelgate.core.governance.consent import CONSENT_PARAMETERS, SUBJECT_PARAMETER
from modelgate.core.pipeline.embedding_context import input_token_limit
from modelgate.core.pipeline.embeddings import EmbeddingService
from modelgate.core.pipeline.explanations import EXPLAIN
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.request_size import REQUEST_LIMITS, TOKEN_LIMITS, token_counter
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["OpenAIHandlers", "openai_error"]

_STATUS = {
    ErrorKind.INVALID_ARGUMENT: (400, "invalid_request_error", None),
    ErrorKind.UNAUTHENTICATED: (401, "invalid_request_error", "invalid_api_key"),
    ErrorKind.PERMISSION_DENIED: (403, "invalid_request_error", "insufficient_permissions"),
    ErrorKind.RATE_LIMITED: (429, "rate_limit_exceeded", "rate_limit_exceeded"),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    ErrorKind.PAYLOAD_TOO_LARGE: (413, "invalid_request_error", "payload_too_large"),
    ErrorKind.UNAVAILABLE: (503, "server_error", "model_unavailable"),
    ErrorKind.OVERLOADED: (503, "server_error", "overloaded"),
    ErrorKind.DEADLINE_EXCEEDED: (504, "server_error", "timeout"),
    ErrorKind.UNSUPPORTED: (400, "invalid_request_error", "unsupported"),
    ErrorKind.FAILED_PRECONDITION: (409, "invalid_request_error", None),
    ErrorKind.INTERNAL: (500, "server_error", None),
}


def openai_error(exc: ModelgateError, param: str | None = None) -> tuple[int, bytes]:
    status, kind, code = _STATUS[exc.kind]
    if exc.kind is ErrorKind.NOT_FOUND and exc.details.get("resource", "model") != "model":
        code = None  # a job, a prediction or a route: OpenAI's code names only models
    code = exc.details.get("openai_code", code)
    param = param or exc.details.get("openai_param")
    body = {"error": {"message": exc.message, "type": kind, "param": param, "code": code}}
    return status, orjson.dumps(body)


class OpenAIHandlers:
    def __init__(self, inference: InferenceService, embeddings: EmbeddingService):
        self._inference = inference
        self._embeddings = embeddings
        self._created = int(time.time())

    async def models(self, principal: Principal | None = None) -> bytes:
        data = [
            await self._model_object(name)
            for name in await self._inference.catalog.visible_models(principal)
        ]
        return orjson.dumps({"object": "list", "data": data})

    async def model(self, name: str, principal: Principal | None = None) -> bytes:
        if name not in await self._inference.catalog.visible_models(principal):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"The model '{name}' does not exist")
        return orjson.dumps(await self._model_object(name))

    async def _model_object(self, name: str) -> dict[str, Any]:
        """OpenAI's model object; an embedding model adds its context (extension fields):
        ``context_length`` (tokens, [CLS] and [SEP] included) and, once loaded (its tokenizer
        says how many special tokens it adds), ``max_input_tokens``, the most tokens one input
        may have as ``usage`` counts them."""
        model: dict[str, Any] = {
            "id": name,
            "object": "model",
            "created": self._created,
            "owned_by": "modelgate",
        }
        registry = self._inference.registry
        try:
            manifest = await registry.manifest(name)
        except ModelgateError:
            return model  # listed by the catalog, its manifest unreadable: nothing to add
        context = manifest.limits.max_tokens_per_text
        if manifest.embedding is None or context is None:
            return model
        model["context_length"] = context
        versions = registry.versions(name)
        counter = token_counter(versions[-1].runtime) if versions else None
        if counter is not None:
            model["max_input_tokens"] = input_token_limit(manifest, counter)
        return model

    async def embeddings(self, body: bytes, principal: Principal | None = None) -> bytes:
        return (await self.embedding_answer(body, principal))[0]

    async def embedding_answer(
        self, body: bytes, principal: Principal | None = None
    ) -> tuple[bytes, str | None]:
        """The response body, and the region of the node that answered (None: no region),
        which the REST adapter sends as ``X-Modelgate-Region``."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"malformed JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise invalid("the request body must be a JSON object")
        model = doc.get("model")
        if not isinstance(model, str) or not model:
            raise invalid("'model' is required and must be a string")
        inputs = embedding_input(doc.get("input"))
        truncate = truncate_option(doc)
        encoding = doc.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise invalid("'encoding_format' must be 'float' or 'base64'")
        dimensions = doc.get("dimensions")
        if dimensions is not None and (
            not isinstance(dimensions, int) or isinstance(dimensions, bool)
        ):
            raise invalid("'dimensions' must be an integer")
        user = doc.get("user")
        if user is not None and not isinstance(user, str):
            raise invalid("'user' must be a string")
        parameters = _governance_parameters(doc, user)
        if EXPLAIN in doc:  # modelgate's own field: refused by every embedding model, and
            # unless a boolean (docs/explanations.md); false asks nothing
            parameters[EXPLAIN] = doc[EXPLAIN]
        try:
            result = await self._embeddings.embed(
                model, inputs, dimensions, principal, parameters, truncate
            )
        except ModelgateError as exc:
            raise _refusal(exc) from None
        vectors = np.ascontiguousarray(result.vectors, dtype="<f4")
        data: list[dict[str, Any]] = []
        for index, vector in enumerate(vectors):
            embedding: Any = (
                base64.b64encode(vector.tobytes()).decode("ascii")
                if encoding == "base64"
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        payload = orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {
                    "prompt_tokens": result.prompt_tokens,
                    "total_tokens": result.prompt_tokens,
                },
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        return payload, result.region


def _refusal(exc: ModelgateError) -> ModelgateError:
    """A model's request limits refuse as OpenAI refuses input over its own: 400
    ``invalid_request_error`` on ``input``, ``context_length_exceeded`` for tokens."""
    limit = exc.details.get("size_limit")
    if exc.kind is not ErrorKind.PAYLOAD_TOO_LARGE or limit not in REQUEST_LIMITS:
        return exc
    details = {**exc.details, "openai_param": "input"}
    details["openai_code"] = "context_length_exceeded" if limit in TOKEN_LIMITS else None
    return ModelgateError(ErrorKind.INVALID_ARGUMENT, exc.message, details=details)


def _governance_parameters(doc: dict[str, Any], user: str | None) -> dict[str, Any]:
    """OpenAI's ``user`` names the data subject; ``consent`` / ``log_payload`` (extra body
    fields) can withhold consent to payload logging (see core/governance/payload_logger.py)."""
    parameters: dict[str, Any] = {}
    if user:
        parameters[SUBJECT_PARAMETER] = user
    for name in CONSENT_PARAMETERS:
        if name in doc:
            parameters[name] = doc[name]
    return parameters
