"""The REST route table: which handler answers which method on which path.

A request's path is matched to a route template by splitting it (:func:`match`), not by
trying patterns one after the other, and the template is looked up in the table: a dict, so
the inference path costs one split and a few comparisons whatever the table holds. A path
that names no template is 404 and a row without the request's method is 405 with
``Allow``, both before authentication; a handler authenticates, then reads the body. Two
rows are catch-alls that authenticate (and read the body) before their 404, as the routes
beside them do: ``GET /v2/models/{model}/{action}`` and ``POST /v2/repository/...``.

Answered before the table (api/rest/app.py): ``/admin`` (a mounted FastAPI app),
``/oauth/token`` and ``/.well-known/jwks.json``. Outside ``/v1`` and ``/v2`` the table is
asked only for ``GET /metrics``: any other method or path there is 404, never 405.

Triton's extensions that modelgate does not serve (shared memory, trace and log settings)
have rows of their own that answer 501 with gRPC's message (api/rest/extensions.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelgate.api.rest import extensions, inference, metadata, openai_routes, repository
from modelgate.api.rest.asgi import Receive, Scope, Send
from modelgate.api.rest.errors import no_route

if TYPE_CHECKING:
    from modelgate.api.rest.app import RestApp

__all__ = [
    "ANY",
    "Handler",
    "Route",
    "match",
    "route_table",
    "route_template",
]

#: a route's handler: the app, the request, and the path's captures (the model or other
#: name, "" when the template has none; the version, None when the path names none)
Handler = Callable[["RestApp", Scope, Receive, Send, str, str | None], Awaitable[None]]


#: the method key of a row whose handler answers every method (and says 405 itself)
ANY = "*"


@dataclass(frozen=True, slots=True)
class Route:
    """One row: the handler of each method it answers, and what ``Allow`` says on a 405."""

    handlers: dict[str, Handler]
    allow: str
    #: the path names a model: it goes into the request's log line and span, 405 included
    names_model: bool = False


def _row(handlers: dict[str, Handler], allow: str | None = None, model: bool = False) -> Route:
    return Route(handlers, allow or ", ".join(handlers), model)


def route_table(*, feedback: bool, jobs: bool) -> dict[str, Route]:
    """The routes of an app; ``/v1/feedback`` and ``/v1/jobs`` only when they are served."""
    oip, infer, repo, v1 = metadata, inference.infer, repository, openai_routes
    table = {
        # -- OIP v2 (inference.infer answers GET for models that cache, api/rest/edge.py) --
        "/v2": _row({"GET": oip.server_metadata}),
        "/v2/health/live": _row({"GET": oip.server_live}),
        "/v2/health/ready": _row({"GET": oip.server_ready}),
        "/v2/models/stats": _row({"GET": oip.all_statistics}),
        "/v2/models/{model}": _row({"GET": oip.model_metadata}, model=True),
        "/v2/models/{model}/ready": _row({"GET": oip.model_ready}, model=True),
        "/v2/models/{model}/config": _row({"GET": oip.model_config}, model=True),
        "/v2/models/{model}/stats": _row({"GET": oip.model_statistics}, model=True),
        "/v2/models/{model}/infer": _row({"POST": infer, "GET": infer}, "POST", model=True),
        "/v2/models/{model}/{action}": _row({"GET": oip.no_model_action}, model=True),
        "/v2/repository/index": _row({"POST": repo.repository_index}),
        "/v2/repository/models/{model}/load": _row({"POST": repo.load_model}),
        "/v2/repository/models/{model}/unload": _row({"POST": repo.unload_model}),
        "/v2/repository/...": _row({"POST": repo.no_repository_route}),
        # -- Triton extensions modelgate does not serve: 501, as gRPC's UNIMPLEMENTED -----
        "/v2/systemsharedmemory/...": _row(_get_post(extensions.system_shared_memory)),
        "/v2/cudasharedmemory/...": _row(_get_post(extensions.cuda_shared_memory)),
        "/v2/trace/setting": _row(_get_post(extensions.trace_settings)),
        "/v2/models/{model}/trace/setting": _row(_get_post(extensions.trace_settings), model=True),
        "/v2/logging": _row(_get_post(extensions.log_settings)),
        # -- OpenAI and modelgate's own v1 ----------------------------------------------
        "/v1/models": _row({"GET": v1.models}),
        "/v1/models/{model}": _row({"GET": v1.model}),
        "/v1/embeddings": _row({"POST": v1.embeddings}),
        # -- Prometheus ---------------------------------------------------------------------
        "/metrics": _row({"GET": metadata.metrics}),
    }
    if jobs:  # any method: each job route's methods are api/rest/jobs.py's to say
        table["/v1/jobs/..."] = _row({ANY: v1.jobs})
    if feedback:
        table["/v1/feedback"] = _row({"POST": v1.feedback})
    return table


def _get_post(handler: Handler) -> dict[str, Handler]:
    return {"GET": handler, "POST": handler}


#: the model routes' templates by the action that ends the path
_MODEL_ACTIONS = {
    "": "/v2/models/{model}",
    "ready": "/v2/models/{model}/ready",
    "config": "/v2/models/{model}/config",
    "stats": "/v2/models/{model}/stats",
    "infer": "/v2/models/{model}/infer",
}
_HEALTH = {"live": "/v2/health/live", "ready": "/v2/health/ready"}
#: Triton's shared-memory extensions: every path below each prefix
_SHARED_MEMORY = {
    "systemsharedmemory": "/v2/systemsharedmemory/...",
    "cudasharedmemory": "/v2/cudasharedmemory/...",
}
_REPOSITORY_ACTIONS = {
    "load": "/v2/repository/models/{model}/load",
    "unload": "/v2/repository/models/{model}/unload",
}


def match(api: str, path: str) -> tuple[str, str, str | None]:
    """(template, name, version) of a ``/v2`` (``api`` "oip") or ``/v1`` ("openai") path;
    NOT_FOUND when it names none."""
    parts = path.split("/")[2:]
    if api == "oip":
        if not parts or parts == [""]:
            return "/v2", "", None
        head = parts[0]
        if head == "models" and len(parts) >= 2:
            if parts[1:] == ["stats"]:
                return "/v2/models/stats", "", None
            return _model_route(parts[1:])
        if head == "health" and len(parts) == 2 and parts[1] in _HEALTH:
            return _HEALTH[parts[1]], "", None
        if head == "repository":  # POST only, whatever follows (a 405 before a 404)
            if parts[1:] == ["index"]:
                return "/v2/repository/index", "", None
            if len(parts) == 4 and parts[1] == "models" and parts[3] in _REPOSITORY_ACTIONS:
                return _REPOSITORY_ACTIONS[parts[3]], parts[2], None
            return "/v2/repository/...", "", None
        if head in _SHARED_MEMORY:
            return _SHARED_MEMORY[head], "", None
        if parts == ["trace", "setting"]:
            return "/v2/trace/setting", "", None
        if parts == ["logging"]:
            return "/v2/logging", "", None
    elif parts == ["models"]:
        return "/v1/models", "", None
    elif len(parts) == 2 and parts[0] == "models":
        return "/v1/models/{model}", parts[1], None
    elif parts == ["embeddings"]:
        return "/v1/embeddings", "", None
    elif parts[:1] == ["jobs"]:
        return "/v1/jobs/...", "/".join(parts[1:]), None
    elif parts == ["feedback"]:
        return "/v1/feedback", "", None
    raise no_route(path)


def _model_route(parts: list[str]) -> tuple[str, str, str | None]:
    """[m] [versions v] [action] -> (template, model, version)."""
    name = parts[0]
    rest = parts[1:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        version = rest[1]
        rest = rest[2:]
    if rest == ["trace", "setting"] and name:
        return "/v2/models/{model}/trace/setting", name, version
    if len(rest) > 1 or not name:
        raise no_route()
    action = rest[0] if rest else ""
    return _MODEL_ACTIONS.get(action, "/v2/models/{model}/{action}"), name, version


def route_template(path: str) -> str | None:
    """The route template of a path, for span names: ``/v2/models/{model}/infer``; None
    outside the OIP and OpenAI routes."""
    parts = path.split("/")
    if len(parts) < 2 or parts[1] not in ("v1", "v2"):
        return "/admin" if parts[1:2] == ["admin"] else None
    for i in range(2, len(parts)):
        if parts[i - 1] == "models" and parts[i] != "stats":
            parts[i] = "{model}"
        elif parts[i - 1] == "versions" and parts[i - 2] == "{model}":
            parts[i] = "{version}"
    return "/".join(parts)
