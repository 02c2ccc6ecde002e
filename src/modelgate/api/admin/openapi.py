"""The admin API's OpenAPI document as the server really answers.

FastAPI documents a route's success and its 422; everything else a route may answer is
added here, with the admin API's error shape (``{"error": "..."}``):

- on every route: 401 (no or a bad credential), 403 (a scope it lacks, a disabled tenant),
  413 (a body over ``MODELGATE_ADMIN_MAX_BODY_BYTES``), 415 (a ``Content-Encoding`` that
  RestApp does not decode, or a body that cannot be JSON: ``json_body.py``), 429 (the
  tenant's admin rate limit, ``rate_limits.py``, or an address or key the abuse guard
  blocks), 503 (the store does not answer);
- per route (:data:`ROUTE_ERRORS`): 400 (a value the core refuses: names, scopes, dates),
  404 (an unknown or foreign id), 409 (it exists already, or its state forbids it);
- with idempotency on, POST, PUT and DELETE take an ``Idempotency-Key`` header and may
  answer 400 (a malformed key), 409 (its first request still runs, or held a secret) and
  422 (the key was used for another request): see ``api/admin/idempotency.py``.

Credentials are security schemes (bearer or ``x-api-key``), not header parameters, so
clients and fuzzers send them as credentials. A route missing from :data:`ROUTE_ERRORS`
fails the document's generation, so a new route cannot go undocumented; it also names each
operation (``operationId``). The document is also merged whole into the one of every route
(``api/openapi/document.py``, served at ``/openapi.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

__all__ = ["ROUTE_ERRORS", "install_openapi"]

_ERROR = "AdminError"
_DESCRIPTIONS = {
    400: "The request is well-formed but a value is refused (the message says which).",
    401: "No credential, or one that is not valid (`WWW-Authenticate: Bearer`).",
    403: "The credential lacks the scope the route needs, or its tenant is disabled.",
    404: "No such resource, or one the caller may not see.",
    409: "The resource exists already, or its state does not allow this.",
    413: "The body is larger than the admin API accepts.",
    415: "A `Content-Encoding` modelgate does not decode (it decodes gzip and deflate), or a "
    "body that cannot be JSON (`multipart/*`, or another type with a body that is not JSON).",
    422: "The request does not match its schema.",
    429: "Too many requests: the tenant's admin rate limit (or fairness audit budget) is "
    "spent, or this address or key is blocked after refused requests (`Retry-After`).",
    503: "The store does not answer; retry later (`Retry-After`).",
}
_EVERY_ROUTE = (401, 403, 413, 415, 429, 503)
_SIDE_EFFECTS = ("post", "put", "patch", "delete")
_IDEMPOTENCY = {
    400: "A malformed `Idempotency-Key` (1 to 255 visible ASCII characters).",
    409: "The request with this `Idempotency-Key` still runs, or its answer held a secret "
    "shown once.",
    422: "This `Idempotency-Key` was used for another request.",
}

#: (method, path) -> the operation id (what a generated SDK names the method: stable, never
#: the Python function's name) and the error statuses a route answers besides those of
#: every route
ROUTE_ERRORS: dict[tuple[str, str], tuple[str, tuple[int, ...]]] = {
    ("GET", "/admin/plans"): ("listPlans", ()),
    ("POST", "/admin/plans"): ("createPlan", (400, 409)),
    ("GET", "/admin/tenants"): ("listTenants", ()),
    ("POST", "/admin/tenants"): ("createTenant", (400, 404, 409)),
    ("GET", "/admin/tenants/{tenant_id}/keys"): ("listKeys", (404,)),
    ("POST", "/admin/tenants/{tenant_id}/keys"): ("createKey", (400, 404, 409)),
    ("POST", "/admin/keys/{key_id}/revoke"): ("revokeKey", (404, 409)),
    ("POST", "/admin/keys/{key_id}/rotate"): ("rotateKey", (404, 409)),
    ("GET", "/admin/audit"): ("listAudit", ()),
    ("GET", "/admin/audit/verify"): ("verifyAudit", ()),
    ("GET", "/admin/usage"): ("getUsage", (400, 404)),
    ("GET", "/admin/prices"): ("listPrices", ()),
    ("PUT", "/admin/prices/{target}"): ("setPrice", (400, 404)),
    ("DELETE", "/admin/prices/{target}"): ("deletePrice", (400, 404)),
    ("GET", "/admin/tenants/{tenant_id}/payload-logging"): ("getPayloadLogging", (404,)),
    ("PUT", "/admin/tenants/{tenant_id}/payload-logging"): ("setPayloadLogging", (400, 404)),
    ("GET", "/admin/subjects/{subject}/export"): ("exportSubject", (400, 404, 409)),
    ("DELETE", "/admin/subjects/{subject}"): ("eraseSubject", (400, 404, 409)),
    ("GET", "/admin/models/{model}/monitoring"): ("getModelMonitoring", (400, 404)),
    ("GET", "/admin/models/{model}/fairness"): ("getModelFairness", (400, 404)),
    ("POST", "/admin/models/{model}/learn"): ("startLearningRun", (400, 404, 409)),
    ("GET", "/admin/models/{model}/learn"): ("listLearningRuns", (404,)),
    ("GET", "/admin/models/{model}/learn/{run_id}"): ("getLearningRun", (404,)),
    ("GET", "/admin/models/{model}/card"): ("getModelCard", (404,)),
    ("GET", "/admin/models/{model}/versions/{version}/card"): ("getModelVersionCard", (404,)),
    ("GET", "/admin/models/{model}/deployment"): ("getDeployment", (404,)),
    ("PUT", "/admin/models/{model}/deployment"): ("setDeployment", (400, 404, 409)),
    ("POST", "/admin/models/{model}/deployment/promote"): ("promoteDeployment", (400, 404, 409)),
    ("POST", "/admin/models/{model}/deployment/rollback"): ("rollbackDeployment", (400, 404, 409)),
    ("GET", "/admin/tenants/{tenant_id}/quotas"): ("getTenantQuotas", (404,)),
    ("GET", "/admin/traffic"): ("getTraffic", (404,)),
    ("GET", "/admin/deployments"): ("listDeployments", ()),
}


def install_openapi(app: FastAPI, *, idempotency: bool) -> None:
    """Replace ``app.openapi`` with the complete document (built once, on first use)."""
    app.openapi = _builder(app, idempotency)  # type: ignore[method-assign]


def _builder(app: FastAPI, idempotency: bool) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, routes=app.routes, tags=app.openapi_tags
            )
            app.openapi_schema = complete(document, idempotency=idempotency)
        return app.openapi_schema

    return openapi


def complete(document: dict[str, Any], *, idempotency: bool) -> dict[str, Any]:
    """``document`` with the security schemes, every error status and the idempotency
    header; ``LookupError`` for a route :data:`ROUTE_ERRORS` does not know."""
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})[_ERROR] = {
        "type": "object",
        "title": _ERROR,
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What went wrong."}},
    }
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API key or a JWT."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    }
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            entry = ROUTE_ERRORS.get((method.upper(), path))
            if entry is None:
                raise LookupError(
                    f"{method.upper()} {path} has no entry in ROUTE_ERRORS (api/admin/openapi.py)"
                )
            operation["operationId"], extra = entry
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            responses = operation.setdefault("responses", {})
            for status in (*_EVERY_ROUTE, *extra):
                _add(responses, status, _DESCRIPTIONS[status])
            if idempotency and method in _SIDE_EFFECTS:
                operation.setdefault("parameters", []).append(_idempotency_header())
                for status, description in _IDEMPOTENCY.items():
                    _add(responses, status, description)
    return document


def _add(responses: dict[str, Any], status: int, description: str) -> None:
    key = str(status)
    error = {"$ref": f"#/components/schemas/{_ERROR}"}
    if key not in responses:
        responses[key] = {"description": description, "content": _json(error)}
        return
    # FastAPI's own 422 (its validation errors) or an earlier reason: say both, and either
    # body may come
    found = responses[key]
    known = found.get("description", "")
    if description not in known:
        found["description"] = f"{known} {description}".strip()
    schema = found.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        found["content"] = _json(error)
    elif schema != error and error not in schema.get("anyOf", ()):
        found["content"] = _json({"anyOf": [schema, error]})


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _idempotency_header() -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Makes a retry of this request safe: the same key answers what the "
        "first request answered (`Idempotent-Replayed: true`) while its record is kept "
        "(24 h by default).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    }
