"""The REST application: a plain ASGI callable, because the inference path is the product.

A FastAPI route costs about three times a plain ASGI callable on this project's machine, so
the OIP, OpenAI and metrics routes are dispatched through a route table of their own
(api/rest/routes.py: method and path template -> handler); the management API is mounted
as a FastAPI app for its OpenAPI document.

A request, in order (the per-call steps are api/call.py's, shared with gRPC)::

    request id, span                      __call__
    /admin | front: /oauth/token, /.well-known/jwks.json (when served),
        /openapi.json, /docs, /redoc, /dashboard                      _dispatch
    route table: 404 | 405 | handler      _dispatch, routes.py
        authenticate, read the body, call the core, answer
                                          metadata.py, inference.py, repository.py,
                                          openai_routes.py
    an error: penalize, answer in the API's shape (OIP, OpenAI)    _dispatch, _fail
    span ends, access log line            __call__
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from modelgate.api.admin.rate_limits import CHECKED, AdminRateLimits
from modelgate.api.call import CallPipeline
from modelgate.api.credentials import PRINCIPAL, credential_from
from modelgate.api.dashboard.pages import PAGE, DashboardApp
from modelgate.api.oip_codec import encode_json
from modelgate.api.openai.embeddings import OpenAIHandlers, openai_error
from modelgate.api.openapi.document import DOC_PAGES, build_document
from modelgate.api.openapi.pages import build_docs_app
from modelgate.api.rest.asgi import (
    LOG_LINE,
    MODEL,
    ASGIApp,
    ClientGoneError,
    Message,
    Receive,
    RequestSender,
    Scope,
    Send,
    client_host,
    closing_headers,
    credential_headers,
    lifespan,
    read_body,
    respond,
)
from modelgate.api.rest.errors import (
    MethodNotAllowedError,
    hold_refusal,
    http_status,
    no_route,
    rate_limit_headers,
    retry_after_header,
)
from modelgate.api.rest.jobs import JobRoutes
from modelgate.api.rest.oauth import issue_token
from modelgate.api.rest.routes import ANY, Route, match, route_table, route_template
from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.identity import Principal
from modelgate.core.access.oauth import TokenService
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.admission.backpressure import RefusalBackpressure, counted_down
from modelgate.core.monitoring.feedback import FeedbackService
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.request_context import current_request_id
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.observability.logs import RequestLog, request_id_from
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.observability.tracing import OtelTracer

__all__ = ["RestApp", "RestLimits"]


log = logging.getLogger("modelgate.rest")


_JSON = [(b"content-type", b"application/json")]
_CLOSE = ((b"connection", b"close"),)
_API = {"/v2": "oip", "/v2/": "oip", "/v1": "openai", "/v1/": "openai"}
#: the headers every request's id and span read
_CALL_HEADERS = frozenset((b"x-request-id", b"traceparent", b"tracestate"))
#: the paths whose route is remembered: past that many the memory starts again (a client
#: sending ever new paths costs the split of each, as without it); longer paths are not kept
_ROUTES_SEEN = 4096
_SEEN_PATH_LENGTH = 256
#: (api, row, name, version) of a routed path
_Routed = tuple[str, Route, str, str | None]
#: the admin API's pages that need no credential (its interactive docs)
_ADMIN_OPEN = ("/admin/docs", "/admin/redoc", "/admin/openapi.json", "/admin/static/")
#: the dashboard's assets (api/dashboard/pages.py)
_DASHBOARD_ASSETS = PAGE + "/"


@dataclass(frozen=True, slots=True)
class RestLimits:
    """Body limits, checked from ``Content-Length`` and again while the body streams, before
    anything is parsed: ``max_body_bytes`` for inference, embeddings, jobs and feedback,
    ``admin_max_body_bytes`` for ``/admin`` and ``/v2/repository``."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_elements: int = 16 * 1024 * 1024
    admin_max_body_bytes: int = 1024 * 1024


class RestApp:
    def __init__(
        self,
        service: InferenceService,
        openai: OpenAIHandlers,
        metrics: PrometheusMetrics,
        limits: RestLimits = RestLimits(),
        authenticator: Authenticator | None = None,
        admin_app: ASGIApp | None = None,
        metrics_authenticator: Authenticator | None = None,
        tokens: TokenService | None = None,
        jwks: dict[str, Any] | None = None,
        abuse: AbuseGuard | None = None,
        tracer: OtelTracer | None = None,
        requests: RequestLog | None = None,
        feedback: FeedbackService | None = None,
        jobs: JobRoutes | None = None,
        admin_authenticator: Authenticator | None = None,
        backpressure: RefusalBackpressure | None = None,
        admin_rate_limits: AdminRateLimits | None = None,
    ):
        self.service = service
        self.openai = openai
        self.metrics = metrics
        self.limits = limits
        self.authenticator = authenticator
        self.admin_app = admin_app
        self.metrics_authenticator = metrics_authenticator
        self.tokens = tokens
        self.jwks = jwks
        self.abuse = abuse
        #: a server span per request, None: tracing is off
        self.tracer = tracer
        #: a log line per request, None: the request log is off
        self.requests = requests
        #: ``POST /v1/feedback``, None: not served
        self.feedback = feedback
        #: ``/v1/jobs`` (api/rest/jobs.py), None: not served
        self.jobs = jobs
        #: who may call ``/admin``, asked from the headers before its body is read
        self.admin_authenticator = admin_authenticator or authenticator
        #: each tenant's ``/admin`` requests, counted before the body is read
        self.admin_rate_limits = admin_rate_limits
        self.pipeline: CallPipeline[Scope] = CallPipeline(
            "rest", client_host, abuse=abuse, tracer=tracer, requests=requests
        )
        self.routes = route_table(feedback=feedback is not None, jobs=jobs is not None)
        #: the routes answered before the table, by path: OAuth when served, the OpenAPI
        #: document and its pages (api/openapi/: the document is built on first use)
        self.front: dict[str, ASGIApp] = {}
        if tokens is not None:
            self.front["/oauth/token"] = self._issue_token
        if jwks is not None:
            self.front["/.well-known/jwks.json"] = self._jwks
        for path in ("/openapi.json", *DOC_PAGES):
            self.front[path] = self._docs
        self.front[PAGE] = self._dashboard = DashboardApp()  # its files read on first use
        self._docs_app: ASGIApp | None = None
        #: path -> its row and captures, for the paths routed lately (:meth:`_routed`)
        self._seen: dict[str, _Routed] = {}
        #: callers refused for a rate limit or quota, answered before their body is read
        admission = service.admission
        self.refusals = admission.memo if admission is not None else None
        #: shedding on queueing delay, before the body is read (None: off)
        self.overload = admission.overload if admission is not None else None
        #: a connection whose requests keep being refused has each further refusal held
        #: (None: off)
        self.backpressure = backpressure

    async def principal(self, scope: Scope) -> Principal | None:
        """The caller (None when access control is off); UNAUTHENTICATED without a credential."""
        if self.authenticator is None:
            return None
        credential = credential_from(*credential_headers(scope))
        return await self.authenticate(scope, self.authenticator, credential)

    async def authenticate(
        self, scope: Scope, authenticator: Authenticator, credential: str | None
    ) -> Principal:
        principal = await self.pipeline.authentication(authenticator, credential, scope)
        scope[PRINCIPAL] = principal  # whom the error path counts a failure against; the log
        return principal

    async def ok(self, send: Send, api: str, payload: Any, status: int = 200) -> None:
        await respond(send, status, encode_json(payload), _JSON)
        self.metrics.http_answer(api, status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":  # the server runs start-up itself
                await lifespan(receive, send)
            return
        start = time.perf_counter_ns()
        sent_id = traceparent = tracestate = None
        for key, value in scope["headers"]:
            if key not in _CALL_HEADERS:  # most headers: one set lookup, not three compares
                continue
            if key == b"x-request-id":
                sent_id = value
            elif key == b"traceparent":
                traceparent = value
            else:
                tracestate = value
        request_id = request_id_from(sent_id)
        pipeline = self.pipeline
        span = None
        if pipeline.tracer is not None:
            path: str = scope["path"]
            method: str = scope["method"]
            route = route_template(path)
            span = pipeline.http_span(method, route, path, request_id, traceparent, tracestate)
        sender = RequestSender(send, request_id)
        context = current_request_id.set(request_id)  # for listeners (feedback)
        try:
            await self._dispatch(scope, receive, sender)
        finally:
            current_request_id.reset(context)
            if pipeline.observed:  # the span ends, the log line is written
                status = sender.status
                model, version = scope.get(MODEL, (None, None))
                pipeline.finish(
                    scope["method"],
                    scope["path"],
                    start,
                    request_id,
                    traceparent,
                    span,
                    status,
                    ErrorKind.INTERNAL.value if status >= 500 else None,
                    scope.get(PRINCIPAL),
                    model,
                    version,
                    scope.get(LOG_LINE),
                )

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        seen = self._seen.get(path)  # a /v1 or /v2 path routed before: its row at once
        if seen is None:
            if self.admin_app is not None and (path == "/admin" or path.startswith("/admin/")):
                await self._admin(scope, receive, send, self.admin_app)
                return
            front = self.front.get(path)
            if front is None and path.startswith("/docs/"):
                front = self.front["/docs"]  # the docs page's assets
            elif front is None and path.startswith(_DASHBOARD_ASSETS):
                front = self._dashboard  # the dashboard's assets
            if front is not None:
                await front(scope, receive, send)
                return
            api = _API.get(path[:4] if len(path) == 3 or path[3:4] == "/" else "", "other")
        else:
            api = seen[0]
        try:
            if seen is None:
                if api == "other" and (path != "/metrics" or method != "GET"):
                    await self._fail(send, api, no_route(path))  # any other method: 404, not 405
                    return
                seen = self._routed(api, path)
            _, route, name, version = seen
            if route.names_model:
                scope[MODEL] = (name, version)
            handler = route.handlers.get(method) or route.handlers.get(ANY)
            if handler is None:
                raise MethodNotAllowedError(method, route.allow)
            await handler(self, scope, receive, send, name, version)
        except ClientGoneError:
            return
        except MethodNotAllowedError as exc:
            error = ModelgateError(ErrorKind.INVALID_ARGUMENT, str(exc))
            body = openai_error(error)[1] if api == "openai" else orjson.dumps({"error": str(exc)})
            await respond(send, 405, body, [*_JSON, (b"allow", exc.allowed.encode())])
            self.metrics.http_answer(api, 405)
        except ModelgateError as exc:
            principal = scope.get(PRINCIPAL)
            # counts the failure, and slows the answer if due
            await self.pipeline.penalize(principal, exc)
            closing = closing_headers(scope, exc)
            if exc.kind is ErrorKind.RATE_LIMITED and self.backpressure is not None:
                held = await hold_refusal(self.backpressure, scope, exc.retry_after or 0.0)
                if held is None:
                    closing = _CLOSE
                elif held:
                    exc = counted_down(exc, held)
            await self._fail(send, api, exc, closing)
            if exc.kind is ErrorKind.RATE_LIMITED and self.refusals is not None and principal:
                scope[LOG_LINE] = self.refusals.line(principal)  # at most one a second
        except Exception:  # the outermost layer: log with the request, answer 500
            log.exception("unhandled error on %s %s", scope["method"], path)
            await self._fail(send, api, ModelgateError(ErrorKind.INTERNAL, "internal error"))

    def _routed(self, api: str, path: str) -> _Routed:
        """The row of a ``/v1``, ``/v2`` (``api``) or ``/metrics`` path and its captures;
        NOT_FOUND when it names none. A ``/v1`` or ``/v2`` path's is remembered: its
        row and captures depend on the path alone."""
        if api == "other":  # GET /metrics
            return api, self.routes[path], "", None
        template, name, version = match(api, path)
        route = self.routes.get(template)
        if route is None:
            raise no_route(path)
        routed = (api, route, name, version)
        if len(path) <= _SEEN_PATH_LENGTH:
            if len(self._seen) >= _ROUTES_SEEN:  # bounded: start again
                self._seen.clear()
            self._seen[path] = routed
        return routed

    async def _fail(
        self, send: Send, api: str, exc: ModelgateError, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        if api == "openai":
            status, body = openai_error(exc)
            status = exc.details.get("http_status", status)  # 415 (api/rest/content_encoding.py)
        else:
            status, body = http_status(exc), orjson.dumps({"error": exc.message})
        headers = [*_JSON, *retry_after_header(exc), *rate_limit_headers(exc.details), *extra]
        if exc.kind is ErrorKind.UNAUTHENTICATED:
            headers.append((b"www-authenticate", b'Bearer realm="modelgate"'))
        await respond(send, status, body, headers)
        self.metrics.http_answer(api, status)

    async def _issue_token(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.tokens is not None  # in ``front`` only when served
        await issue_token(self.tokens, self.abuse, scope, receive, send)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._docs_app is None:  # built when first asked for: no cost to a server never asked
            self._docs_app = build_docs_app(lambda: build_document(self))
        await self._docs_app(scope, receive, send)

    async def _jwks(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, orjson.dumps(self.jwks), _JSON)

    # -- /admin (a FastAPI app) -------------------------------------------------------------
    async def _admin(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """The caller is authenticated from the headers, its tenant's admin rate limit
        applied, and the body read within ``admin_max_body_bytes`` before the admin app
        parses anything: a request without a valid credential, or past its tenant's limit,
        costs no body (and one without a credential counts against its address)."""
        try:
            if self.admin_authenticator is not None and not scope["path"].startswith(_ADMIN_OPEN):
                credential = credential_from(*credential_headers(scope))
                principal = await self.authenticate(scope, self.admin_authenticator, credential)
                if self.admin_rate_limits is not None:
                    await self.admin_rate_limits.request(principal)
                    scope[CHECKED] = True  # the admin app does not count it again
            body = await read_body(scope, receive, self.limits.admin_max_body_bytes)
        except ClientGoneError:
            return
        except ModelgateError as exc:  # in the admin API's shape (api/admin/app.py)
            await self.pipeline.penalize(scope.get(PRINCIPAL), exc)
            await self._fail(send, "admin", exc, closing_headers(scope, exc))
            return
        await app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over the already read ``body``, then waits on ``receive``
    (for the client's disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
