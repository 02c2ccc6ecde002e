"""The one OpenAPI 3.1 document of every HTTP route a :class:`RestApp` answers.

Built from what the app really dispatches, so it cannot describe another server: the rows of
its route table (``api/rest/routes.py``; each looked up in ``operations.py``, where a row
that is missing fails the build), the routes it answers before the table (``RestApp.front``:
OAuth, JWKS, this document) and the admin app's own FastAPI document (``api/admin/
openapi.py``), merged in whole. What is served depends on the app: ``/v1/jobs`` and
``/v1/feedback`` when they are, ``/oauth/token`` with a signing key, ``GET .../infer`` with
a result cache, credentials unless ``MODELGATE_AUTH=off``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from modelgate import __version__
from modelgate.api.openapi.operations import (
    EXPANDED,
    FRONT,
    OPERATIONS,
    UNDOCUMENTED,
    VERSIONED,
    Operation,
)
from modelgate.core.access.identity import Scope
from modelgate.core.jobs.jobs import JobState
from modelgate.observability.metrics import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from modelgate.api.rest.app import RestApp

__all__ = ["DOC_PAGES", "build_document"]

#: the pages answered beside the document (HTML and their assets), not API operations
DOC_PAGES = ("/docs", "/redoc")
_REF = "#/components/schemas/{model}"
_PARAMETER = re.compile(r"\{(\w+)\}")
_STATUS = {
    304: "Not modified: the `ETag` sent in `If-None-Match` still holds.",
    400: "The request is refused (the message says why).",
    401: "No credential, or one that is not valid (`WWW-Authenticate: Bearer`).",
    403: "The credential lacks the scope, or its tenant is disabled.",
    404: "No such model, version, job or request (or one the caller may not see).",
    405: "Not over GET: the model's manifest has no `cache` section.",
    409: "The state does not allow this (e.g. a model not loaded, a job already ended).",
    413: "The body (or the request's rows, texts or tokens) is over a limit.",
    415: "A `Content-Encoding` modelgate does not decode (it decodes gzip and deflate).",
    429: "A rate limit, quota or the abuse guard refuses the caller (`Retry-After`).",
    501: "Not supported by modelgate (e.g. a datatype the model cannot take).",
    503: "Shed under load, or a store does not answer; retry later (`Retry-After`).",
    504: "The request's deadline passed.",
}
_TAGS = {
    "health": "OIP v2 server metadata, liveness and readiness (never need a credential).",
    "models": "OIP v2 model metadata, readiness, configuration and statistics.",
    "inference": "OIP v2 inference, JSON or binary tensor data.",
    "repository": "OIP v2 repository extension: list, load and unload models.",
    "openai": "OpenAI-compatible routes: models and embeddings.",
    "jobs": "Asynchronous inference jobs (docs/jobs.md).",
    "feedback": "Ground truth for earlier predictions (docs/monitoring.md).",
    "oauth": "OAuth2 client credentials: a JWT for an API key.",
    "metrics": "Prometheus metrics.",
    "openapi": "This document.",
    "dashboard": "The live dashboard's page (docs/dashboard.md).",
}
_CREDENTIALS: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def build_document(app: RestApp) -> dict[str, Any]:
    """The document; ``LookupError`` for a route it cannot describe."""
    operations = list(_table_operations(app))
    for path in app.front:
        if path in DOC_PAGES:
            continue
        if path not in FRONT:
            raise LookupError(f"{path} is answered but has no entry in FRONT (operations.py)")
        operations.extend((path, m, op) for m, op in FRONT[path].items())
    models = {op.request for _, _, op in operations if op.request is not None}
    models |= {op.response for _, _, op in operations if op.response is not None}
    models |= {op.error for _, _, op in operations}
    schemas = _schemas(models)
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op in operations:
        paths.setdefault(path, {})[method.lower()] = _operation(app, path, method, op)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "modelgate API",
            "version": __version__,
            "description": "Every HTTP route of modelgate: OIP v2 (KServe, Triton), the "
            "OpenAI-compatible routes, jobs, feedback, OAuth, metrics and the admin API. "
            "See docs/api-reference.md." + _unserved(app),
        },
        "servers": [{"url": "/", "description": "The server that serves this document."}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": _security_schemes(app)},
    }
    if isinstance(app.admin_app, FastAPI):
        _merge_admin(document, app.admin_app.openapi())
    used = {tag for ops in document["paths"].values() for op in ops.values() for tag in op["tags"]}
    document["tags"] = [{"name": t, "description": d} for t, d in _TAGS.items() if t in used]
    document["tags"] += [{"name": t} for t in sorted(used - set(_TAGS))]
    return document


def _unserved(app: RestApp) -> str:
    """The table's rows that are no operation (UNDOCUMENTED), said in the description."""
    rows = [f"`{t}` ({UNDOCUMENTED[t]})" for t in app.routes if t in UNDOCUMENTED]
    return "\n\nAnswered but not operations: " + "; ".join(rows) + "." if rows else ""


def _table_operations(app: RestApp) -> list[tuple[str, str, Operation]]:
    found: list[tuple[str, str, Operation]] = []
    for template, route in app.routes.items():
        if template in UNDOCUMENTED:
            continue
        if template in EXPANDED:
            for path, methods in EXPANDED[template].items():
                found.extend((path, method, op) for method, op in methods.items())
            continue
        documented = OPERATIONS.get(template, {})
        for method in route.handlers:
            op = documented.get(method)
            if op is None:
                raise LookupError(
                    f"{method} {template} has no entry in OPERATIONS (api/openapi/operations.py)"
                )
            if method == "GET" and template.endswith("/infer") and app.service.cache is None:
                continue  # answered 405: GET infers only where a result cache can answer it
            found.append((template, method, op))
            if route.names_model and template.startswith(VERSIONED):
                assert op.versioned_id is not None, template
                versioned = VERSIONED + "/versions/{version}" + template[len(VERSIONED) :]
                found.append((versioned, method, _renamed(op, op.versioned_id)))
    return found


def _renamed(op: Operation, operation_id: str) -> Operation:
    return Operation(
        operation_id, op.summary + " (one version)", op.tag, op.response, op.errors,
        op.request, op.error, op.public, None, op.description, op.same_body,
    )  # fmt: skip


def _operation(app: RestApp, path: str, method: str, op: Operation) -> dict[str, Any]:
    secured = _secured(app, path, op)
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _CREDENTIALS + _oauth(app) if secured else [],
    }
    if op.description:
        operation["description"] = op.description
    parameters = [_path_parameter(name) for name in _PARAMETER.findall(path)]
    parameters += _extra_parameters(op.operation_id)
    if parameters:
        operation["parameters"] = parameters
    if op.request is not None:
        operation["requestBody"] = _request_body(op)
    responses: dict[str, Any] = {"200": _success(op)}
    for status in sorted({*op.errors, *((401,) if secured else ())}):
        if status in op.same_body:
            responses[str(status)] = {**_success(op), "description": _STATUS[status]}
        elif status == 304:
            responses["304"] = {"description": _STATUS[304]}
        else:
            responses[str(status)] = {"description": _STATUS[status], **_json(op.error)}
    if op.tag == "oauth" and op.request is not None:  # RFC 6749: every refusal's shape
        responses["401"]["description"] = "The client credentials are refused."
    operation["responses"] = responses
    return operation


def _secured(app: RestApp, path: str, op: Operation) -> bool:
    if op.public:
        return False
    if path == "/metrics":
        return app.metrics_authenticator is not None
    return app.authenticator is not None


def _oauth(app: RestApp) -> list[dict[str, list[str]]]:
    return [{"oauth2": []}] if app.tokens is not None else []


def _success(op: Operation) -> dict[str, Any]:
    if op.operation_id == "getMetrics":
        text = {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}
        return {"description": "The metrics.", "content": text}
    if op.operation_id == "getOpenApiDocument":
        return {"description": "This document.", **_content({"type": "object"})}
    if op.operation_id == "getDashboard":
        html = {"text/html": {"schema": {"type": "string"}}}
        return {"description": "The page.", "content": html}
    assert op.response is not None
    answer: dict[str, Any] = {"description": op.summary + ".", **_json(op.response)}
    if op.tag == "inference":
        answer["content"]["application/octet-stream"] = {
            "schema": {"type": "string", "format": "binary"}
        }
        answer["headers"] = {
            "Inference-Header-Content-Length": {
                "description": "With binary outputs: the length of the JSON header.",
                "schema": {"type": "integer"},
            }
        }
    return answer


def _request_body(op: Operation) -> dict[str, Any]:
    assert op.request is not None
    ref = {"$ref": _REF.format(model=op.request.__name__)}
    content: dict[str, Any] = {"application/json": {"schema": ref}}
    if op.operation_id.startswith("infer"):
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    elif op.operation_id == "createJob":
        content["application/jsonl"] = {"schema": {"type": "string"}}
    elif op.operation_id == "createToken":
        content = {"application/x-www-form-urlencoded": {"schema": ref}}
    # an empty repository body reads as an empty object
    return {"required": op.tag != "repository", "content": content}


def _extra_parameters(operation_id: str) -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> Any:
        return {"name": name, "in": "query", "required": required, "schema": schema,
                "description": description}  # fmt: skip

    if operation_id.startswith("infer") and operation_id.endswith("Cached"):
        return [query("input", {"type": "string"}, "The JSON request, base64url.", True)]
    if operation_id.startswith("infer"):
        return [{"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                 "schema": {"type": "integer", "minimum": 1},
                 "description": "Binary tensor data: the length of the JSON header."}]  # fmt: skip
    if operation_id == "listJobs":
        states = {"type": "string", "enum": [state.value for state in JobState]}
        return [
            query("status", states, "Only jobs in this state."),
            query("model", {"type": "string"}, "Only jobs of this model."),
            query("after", {"type": "string"}, "The last job id of the previous page."),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 999_999_999}, "Page size."),
        ]
    if operation_id == "listJobResults":
        return [
            query("after", {"type": "integer", "minimum": -1, "maximum": 999_999_999},
                  "The last index of the previous page (`next_after`)."),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 999_999_999}, "Page size."),
        ]  # fmt: skip
    if operation_id == "createJob":
        key = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
        said = "A retry with the same key answers the job the first request made."
        return [{"name": "Idempotency-Key", "in": "header", "required": False, "schema": key,
                 "description": said}]  # fmt: skip
    return []


def _path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1}}  # fmt: skip


def _schemas(models: set[type[BaseModel]]) -> dict[str, Any]:
    ordered = sorted(models, key=lambda m: m.__name__)
    _, top = models_json_schema([(m, "validation") for m in ordered], ref_template=_REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    return schemas


def _security_schemes(app: RestApp) -> dict[str, Any]:
    schemes: dict[str, Any] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key, or a JWT (from `/oauth/token` or a configured issuer).",
        },
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    }
    if app.tokens is not None:
        scopes = {scope.value: scope.name.lower().replace("_", " ") for scope in Scope}
        flow = {"tokenUrl": "/oauth/token", "scopes": scopes}
        schemes["oauth2"] = {"type": "oauth2", "flows": {"clientCredentials": flow}}
    return schemes


def _merge_admin(document: dict[str, Any], admin: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name, schema in admin.get("components", {}).get("schemas", {}).items():
        if name in schemas and schemas[name] != schema:
            raise LookupError(f"schema {name} is named twice: the admin API and REST")
        schemas[name] = schema
    for path, operations in admin["paths"].items():
        if path in document["paths"]:
            raise LookupError(f"{path} is both an admin and a REST path")
        document["paths"][path] = operations


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return _content({"$ref": _REF.format(model=model.__name__)})


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}
