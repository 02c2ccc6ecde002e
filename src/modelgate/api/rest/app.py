"""The REST application: a plain ASGI callable, because the inference path is the product.

A FastAPI route costs about three times a plain ASGI callable on this project's machine, so
the OIP, OpenAI and metrics routes are dispatched here by splitting the path; the
management API (later) is mounted as a FastAPI app for its OpenAPI document.

Routes::

    GET  /v2                                       server metadata
    GET  /v2/health/live | /v2/health/ready        health
    GET  /v2/models/stats                          statistics of every model
    GET  /v2/models/{m}[/versions/{v}]             model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready       model readiness
    GET  /v2/models/{m}[/versions/{v}]/config      model configuration
    GET  /v2/models/{m}[/versions/{v}]/stats       statistics
    POST /v2/models/{m}[/versions/{v}]/infer       inference (JSON or binary tensor data)
    GET  /v2/models/{m}[/versions/{v}]/infer       inference for HTTP caches (edge.py)
    POST /v2/repository/index                      repository index
    POST /v2/repository/models/{m}/load | /unload  load and unload
    GET  /v1/models[/{m}]                          OpenAI model list
    POST /v1/embeddings                            OpenAI embeddings
    POST /v1/feedback                              ground truth for earlier predictions
    GET|POST /v1/jobs[/{id}[/results|/cancel]]     asynchronous jobs (api/rest/jobs.py)
    GET  /metrics                                  Prometheus text format
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import orjson

from modelgate.api.credentials import PRINCIPAL, credential_from
from modelgate.api.oip_codec import decode_infer_request, encode_infer_response, encode_json
from modelgate.api.openai.embeddings import OpenAIHandlers, openai_error
from modelgate.api.rest.asgi import (
    ASGIApp,
    ClientGoneError,
    Message,
    Receive,
    RequestSender,
    Scope,
    Send,
    client_host,
    credential_headers,
    lifespan,
    read_body,
    respond,
)
from modelgate.api.rest.edge import decode_query_input, edge_headers, etag_of, not_modified
from modelgate.api.rest.errors import http_status, rate_limit_headers, retry_after_header
from modelgate.api.rest.feedback import submit_feedback
from modelgate.api.rest.jobs import JobRoutes
from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.authorization import require_scope
from modelgate.core.access.identity import Principal
from modelgate.core.access.identity import Scope as Permission  # "Scope" here is the ASGI scope
from modelgate.core.access.oauth import OAuthError, TokenService
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.monitoring.feedback import FeedbackService
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.request_context import current_request_id
from modelgate.core.serving.tracing import traced
from modelgate.errors import ErrorKind, ModelgateError, invalid
from modelgate.observability.logs import RequestLog, request_id_from
from modelgate.observability.metrics import CONTENT_TYPE_LATEST, PrometheusMetrics
from modelgate.observability.tracing import OtelTracer, RequestSpan, trace_id_of

__all__ = ["RestApp", "RestLimits"]


log = logging.getLogger("modelgate.rest")


_JSON = [(b"content-type", b"application/json")]
_API = {"/v2": "oip", "/v2/": "oip", "/v1": "openai", "/v1/": "openai"}
_ACCEPTED_TYPES = (b"application/json", b"application/octet-stream", b"text/plain")
#: the ASGI scope key of the authenticated principal, for the abuse guard's error path
_CALLER = PRINCIPAL
#: the ASGI scope key of the (model, version) a request named, for its log line
_MODEL = "modelgate.model"


#: the admin API's pages that need no credential (its interactive docs)
_ADMIN_OPEN = ("/admin/docs", "/admin/redoc", "/admin/openapi.json", "/admin/static/")
#: the largest ``/oauth/token`` body: a form of a few fields
_OAUTH_MAX_BODY = 16 * 1024
_CLOSE = ((b"connection", b"close"),)
#: what uvicorn reads of a body before the app asks for it (its flow control's high water)
_READ_AHEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class RestLimits:
    """Body limits, checked from ``Content-Length`` and again while the body streams, before
    anything is parsed: ``max_body_bytes`` for inference, embeddings, jobs and feedback,
    ``admin_max_body_bytes`` for ``/admin`` and ``/v2/repository``."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_elements: int = 16 * 1024 * 1024
    admin_max_body_bytes: int = 1024 * 1024


class _MethodNotAllowedError(Exception):
    """A transport concern, so it never reaches the core's error kinds: answered 405."""

    def __init__(self, method: str, allowed: str):
        super().__init__(f"method {method} is not allowed here; use {allowed}")
        self.allowed = allowed


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

    async def _principal(self, scope: Scope) -> Principal | None:
        """The caller (None when access control is off); UNAUTHENTICATED without a credential."""
        if self.authenticator is None:
            return None
        credential = credential_from(*credential_headers(scope))
        return await self._authenticate(scope, self.authenticator, credential)

    async def _authenticate(
        self, scope: Scope, authenticator: Authenticator, credential: str | None
    ) -> Principal:
        """``authenticator.authenticate``, through the abuse guard when there is one (which
        refuses blocked addresses and keys first, and counts refused credentials)."""
        if self.abuse is None:
            check = authenticator.authenticate(credential)
        else:
            check = self.abuse.authenticate(authenticator, credential, client_host(scope))
        if self.tracer is None:
            principal = await check
        else:
            principal = await traced(self.tracer, "authenticate", check)
        scope[_CALLER] = principal  # whom the error path counts a failure against; the log
        return principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":  # the server runs start-up itself
                await lifespan(receive, send)
            return
        start = time.perf_counter_ns()
        sent_id = traceparent = tracestate = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                sent_id = value
            elif key == b"traceparent":
                traceparent = value
            elif key == b"tracestate":
                tracestate = value
        request_id = request_id_from(sent_id)
        span = None
        if self.tracer is not None:
            path: str = scope["path"]
            span = self.tracer.http_request(
                scope["method"], _route(path), path, request_id, traceparent, tracestate
            )
            span.attach()
        sender = RequestSender(send, request_id)
        context = current_request_id.set(request_id)  # for listeners (feedback)
        try:
            await self._dispatch(scope, receive, sender)
        finally:
            current_request_id.reset(context)
            if span is not None or self.requests is not None:
                self._finished(scope, start, request_id, traceparent, span, sender.status)

    def _finished(
        self,
        scope: Scope,
        start: int,
        request_id: str,
        traceparent: bytes | None,
        span: RequestSpan | None,
        status: int,
    ) -> None:
        """The request's span ends and its log line is written."""
        principal = scope.get(_CALLER)
        tenant = principal.tenant_id if principal is not None else None
        model, version = scope.get(_MODEL, (None, None))
        if span is not None:
            error = ErrorKind.INTERNAL.value if status >= 500 else None
            span.finish(status, error, tenant, model, version)
            trace_id: str | None = span.trace_id
        else:  # tracing is off: the client's trace id, when it sent one
            trace_id = trace_id_of(traceparent)
        if self.requests is not None:
            self.requests.write(
                "rest",
                scope["method"],
                scope["path"],
                request_id,
                trace_id,
                tenant,
                model,
                version,
                status,
                time.perf_counter_ns() - start,
            )

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if self.admin_app is not None and (path == "/admin" or path.startswith("/admin/")):
            await self._admin(scope, receive, send, self.admin_app)
            return
        if path == "/oauth/token" and self.tokens is not None:
            await self._oauth_token(scope, receive, send)
            return
        if path == "/.well-known/jwks.json" and self.jwks is not None:
            await respond(send, 200, orjson.dumps(self.jwks), _JSON)
            return
        api = _API.get(path[:4] if len(path) == 3 or path[3:4] == "/" else "", "other")
        try:
            if api == "oip":
                await self._oip(scope, receive, send, path.split("/")[2:])
            elif api == "openai":
                await self._openai(scope, receive, send, path.split("/")[2:])
            elif path == "/metrics" and scope["method"] == "GET":
                if self.metrics_authenticator is not None:
                    principal = await self._authenticate(
                        scope,
                        self.metrics_authenticator,
                        credential_from(*credential_headers(scope)),
                    )
                    require_scope(principal, Permission.MODELS_READ)
                await respond(
                    send,
                    200,
                    self.metrics.exposition(),
                    [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                )
                self.metrics.http_answer(api, 200)
            else:
                await self._fail(
                    send,
                    api,
                    _no_route(path),
                )
        except ClientGoneError:
            return
        except _MethodNotAllowedError as exc:
            error = ModelgateError(ErrorKind.INVALID_ARGUMENT, str(exc))
            body = openai_error(error)[1] if api == "openai" else orjson.dumps({"error": str(exc)})
            await respond(send, 405, body, [*_JSON, (b"allow", exc.allowed.encode())])
            self.metrics.http_answer(api, 405)
        except ModelgateError as exc:
            if self.abuse is not None:  # counts the failure, and slows the answer if due
                await self.abuse.penalize(scope.get(_CALLER), exc)
            await self._fail(send, api, exc, _closing(scope, exc))
        except Exception:  # the outermost layer: log with the request, answer 500
            log.exception("unhandled error on %s %s", scope["method"], path)
            await self._fail(send, api, ModelgateError(ErrorKind.INTERNAL, "internal error"))

    async def _fail(
        self, send: Send, api: str, exc: ModelgateError, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        if api == "openai":
            status, body = openai_error(exc)
        else:
            status, body = http_status(exc), orjson.dumps({"error": exc.message})
        headers = [*_JSON, *retry_after_header(exc), *rate_limit_headers(exc.details), *extra]
        if exc.kind is ErrorKind.UNAUTHENTICATED:
            headers.append((b"www-authenticate", b'Bearer realm="modelgate"'))
        await respond(send, status, body, headers)
        self.metrics.http_answer(api, status)

    # -- /admin (a FastAPI app) -------------------------------------------------------------
    async def _admin(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """The caller is authenticated from the headers and the body read within
        ``admin_max_body_bytes`` before the admin app parses anything: a request without a
        valid credential costs no body, and counts against its address."""
        try:
            if self.admin_authenticator is not None and not scope["path"].startswith(_ADMIN_OPEN):
                credential = credential_from(*credential_headers(scope))
                await self._authenticate(scope, self.admin_authenticator, credential)
            body = await read_body(scope, receive, self.limits.admin_max_body_bytes)
        except ClientGoneError:
            return
        except ModelgateError as exc:  # in the admin API's shape (api/admin/app.py)
            if self.abuse is not None:
                await self.abuse.penalize(scope.get(_CALLER), exc)
            await self._fail(send, "admin", exc, _closing(scope, exc))
            return
        await app(scope, _replay(body, receive), send)

    async def _ok(self, send: Send, api: str, payload: Any, status: int = 200) -> None:
        await respond(send, status, encode_json(payload), _JSON)
        self.metrics.http_answer(api, status)

    # -- OAuth2 client credentials (RFC 6749 4.4) -----------------------------------------
    async def _oauth_token(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.tokens is not None
        headers = [*_JSON, (b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
        try:
            if self.abuse is not None:  # a blocked address is refused before any look-up
                await self.abuse.check_address(client_host(scope))
            if scope["method"] != "POST":  # 405 with Allow, as for any other route
                raise OAuthError("invalid_request", "the token endpoint takes POST only", 405)
            body = await read_body(scope, receive, _OAUTH_MAX_BODY)
            form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
            if any(len(values) > 1 for values in form.values()):
                raise OAuthError("invalid_request", "a parameter is given twice")
            fields = {key: values[0] for key, values in form.items()}
            if fields.get("grant_type") != "client_credentials":
                raise OAuthError("unsupported_grant_type", "only client_credentials is offered")
            client_id, secret = fields.get("client_id"), fields.get("client_secret")
            basic = _basic_credentials(scope)
            if basic is not None:
                # RFC 6749 2.3: a client must not use more than one authentication method
                if secret is not None or client_id not in (None, basic[0]):
                    raise OAuthError(
                        "invalid_request", "send the client credentials once: Basic or the form"
                    )
                client_id, secret = basic
            issued = await self.tokens.client_credentials(client_id, secret, fields.get("scope"))
        except OAuthError as exc:
            if exc.status == 401 and self.abuse is not None:  # a refused client: guessing?
                await self.abuse.refused_credential(client_host(scope))
            extra = [(b"www-authenticate", b'Basic realm="modelgate"')] if exc.status == 401 else []
            if exc.status == 405:
                extra.append((b"allow", b"POST"))
            body = orjson.dumps({"error": exc.error, "error_description": exc.description})
            await respond(send, exc.status, body, headers + extra)
            return
        except ModelgateError as exc:  # e.g. a body over the limit
            body = orjson.dumps({"error": "invalid_request", "error_description": exc.message})
            extra = [*retry_after_header(exc), *_closing(scope, exc)]
            await respond(send, http_status(exc), body, headers + extra)
            return
        answer = {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        }
        await respond(send, 200, orjson.dumps(answer), headers)

    # -- OIP v2 --------------------------------------------------------------------------
    async def _oip(self, scope: Scope, receive: Receive, send: Send, parts: list[str]) -> None:
        method = scope["method"]
        catalog = self.service.catalog
        if not parts or parts == [""]:
            _method(method, "GET")
            await self._ok(send, "oip", catalog.server_metadata())
            return
        head = parts[0]
        if head == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            _method(method, "GET")
            if parts[1] == "live":
                await self._ok(send, "oip", {"live": True})
            else:
                ready = catalog.server_ready()
                await self._ok(send, "oip", {"ready": ready}, 200 if ready else 503)
            return
        if head == "models" and len(parts) >= 2:
            if parts[1:] == ["stats"]:
                _method(method, "GET")
                principal = await self._principal(scope)
                await self._ok(send, "oip", await catalog.statistics(None, None, principal))
                return
            name, version, action = _model_path(parts[1:])
            scope[_MODEL] = (name, version)
            if action == "infer":
                if method != "GET" or self.service.cache is None:
                    _method(method, "POST")
                await self._infer(scope, receive, send, name, version)
                return
            _method(method, "GET")
            principal = await self._principal(scope)
            if action == "":
                meta = await catalog.model_metadata(name, version, principal)
                await self._ok(send, "oip", meta)
            elif action == "ready":
                ready = await catalog.model_ready(name, version, principal)
                await self._ok(send, "oip", {"name": name, "ready": ready}, 200 if ready else 503)
            elif action == "config":
                await self._ok(send, "oip", await catalog.model_config(name, version, principal))
            elif action == "stats":
                await self._ok(send, "oip", await catalog.statistics(name, version, principal))
            else:
                raise _no_route(scope["path"])
            return
        if head == "repository":
            _method(method, "POST")
            principal = await self._principal(scope)
            body = await read_body(scope, receive, self.limits.admin_max_body_bytes)
            doc = _json_object(body) if body.strip() else {}
            if parts[1:] == ["index"]:
                index = await catalog.repository_index(bool(doc.get("ready")), principal)
                await self._ok(send, "oip", index)
                return
            if len(parts) == 4 and parts[1] == "models" and parts[3] in ("load", "unload"):
                if parts[3] == "load":
                    config = _load_config(doc)
                    await catalog.load(parts[2], config, principal, client_host(scope))
                else:
                    await catalog.unload(parts[2], principal, client_host(scope))
                await self._ok(send, "oip", {})
                return
        raise _no_route(scope["path"])

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
    ) -> None:
        header_length = deadline = if_none_match = None
        authorization = api_key = cache_control = None
        for key, value in scope["headers"]:  # one pass over the headers: the hot path
            if key == b"inference-header-content-length":
                try:
                    header_length = int(value)
                except ValueError:
                    raise invalid("Inference-Header-Content-Length must be an integer") from None
            elif key == b"content-type":
                _check_content_type(value)
            elif key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"x-api-key":
                api_key = value.decode("latin-1")
            elif key == b"x-request-timeout-ms":
                deadline = time.monotonic() + _timeout_s(value)
            elif key == b"cache-control":
                cache_control = value.decode("latin-1")
            elif key == b"if-none-match":
                if_none_match = value
        principal = None
        if self.authenticator is not None:
            credential = credential_from(authorization, api_key)
            principal = await self._authenticate(scope, self.authenticator, credential)
        edge = scope["method"] == "GET"
        spec = None
        if edge:  # only models that cache answer GET (the newest version's manifest says)
            await self.service.catalog.authorize(principal, name, version, Permission.INFER)
            spec = (await self.service.registry.manifest(name)).cache
            if spec is None:
                raise _MethodNotAllowedError("GET", "POST")
            body = decode_query_input(scope["query_string"])
            header_length = None
        else:
            body = await read_body(scope, receive, self.limits.max_body_bytes)
        request = decode_infer_request(name, version, body, header_length, self.limits.max_elements)
        request.deadline = deadline
        request.cache_control = cache_control
        response = await self.service.infer(request, principal)
        scope[_MODEL] = (name, response.model_version)  # the version that answered
        payload, json_length = encode_infer_response(response, request.parameters)
        if json_length is None:
            headers = _JSON
        else:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(json_length).encode()),
            ]
        if response.rate_limit is not None:
            headers = headers + rate_limit_headers(response.rate_limit)
        # which version answered, for clients and balancers that read no body (deployments)
        headers = [*headers, (b"x-modelgate-model-version", response.model_version.encode())]
        if response.parameters.get("anomalous"):  # the anomaly check flagged the inputs
            score = str(response.parameters["anomaly_score"]).encode()
            headers = [*headers, (b"x-modelgate-anomaly", score)]
        if response.cache is not None:
            headers = [*headers, (b"x-modelgate-cache", response.cache.encode())]
        if "fallback_from" in response.parameters:  # a fallback model answered
            headers = [*headers, (b"x-modelgate-fallback", response.model_name.encode())]
        status = 200
        if edge:
            etag = etag_of(payload)
            headers = [*headers, *edge_headers(spec, request, response, etag)]
            if not_modified(if_none_match, etag):
                status, payload = 304, b""
                headers = [h for h in headers if h[0] != b"content-type"]
        await respond(send, status, payload, headers)
        self.metrics.http_answer("oip", status)

    # -- OpenAI --------------------------------------------------------------------------
    async def _openai(self, scope: Scope, receive: Receive, send: Send, parts: list[str]) -> None:
        method = scope["method"]
        if parts == ["models"]:
            _method(method, "GET")
            body = await self.openai.models(await self._principal(scope))
        elif len(parts) == 2 and parts[0] == "models":
            _method(method, "GET")
            body = await self.openai.model(parts[1], await self._principal(scope))
        elif parts == ["embeddings"]:
            _method(method, "POST")
            principal = await self._principal(scope)
            for key, value in scope["headers"]:
                if key == b"content-type":
                    _check_content_type(value)
            data = await read_body(scope, receive, self.limits.max_body_bytes)
            body = await self.openai.embeddings(data, principal)
        elif parts[:1] == ["jobs"] and self.jobs is not None:
            handlers = self.jobs.route(parts[1:])
            handler = handlers.get(method)
            if handler is None:
                raise _MethodNotAllowedError(method, ", ".join(handlers))
            body = await handler(scope, receive, await self._principal(scope))
        elif parts == ["feedback"] and self.feedback is not None:
            _method(method, "POST")
            principal = await self._principal(scope)
            for key, value in scope["headers"]:
                if key == b"content-type":
                    _check_content_type(value)
            data = await read_body(scope, receive, self.limits.max_body_bytes)
            body = await submit_feedback(self.feedback, data, principal)
        else:
            raise _no_route(scope["path"])
        await respond(send, 200, body, _JSON)
        self.metrics.http_answer("openai", 200)


def _route(path: str) -> str | None:
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


def _closing(scope: Scope, exc: ModelgateError) -> tuple[tuple[bytes, bytes], ...]:
    """``Connection: close`` for a refusal that may leave a big body unread (too large, or
    the caller refused before it was read): the rest of it is not worth receiving. A body
    of up to 64 KiB (uvicorn's read-ahead) is mostly in already, and discarding the rest
    keeps the connection (closing with unread data resets it, and a client may then miss
    the answer). Only on the error path, so the headers are looked at again here rather
    than on every request."""
    if exc.kind is not ErrorKind.PAYLOAD_TOO_LARGE and _CALLER in scope:
        return ()  # an authenticated caller's body was read, or there is none
    for key, value in scope["headers"]:
        if key == b"transfer-encoding" or (
            key == b"content-length" and (not value.isdigit() or int(value) > _READ_AHEAD)
        ):
            return _CLOSE
    return ()


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over the already read ``body``, then waits on ``receive``
    (for the client's disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def _basic_credentials(scope: Scope) -> tuple[str, str] | None:
    """``Authorization: Basic`` client credentials, as RFC 6749 prefers them."""
    for key, value in scope["headers"]:
        if key == b"authorization" and value[:6].lower() == b"basic ":
            try:
                decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
            client_id, sep, secret = decoded.partition(":")
            if not sep:
                raise OAuthError("invalid_client", "malformed Basic credentials", 401)
            return unquote_plus(client_id), unquote_plus(secret)
    return None


def _timeout_s(value: bytes) -> float:
    """``X-Request-Timeout-Ms``: how long the caller waits, in whole milliseconds."""
    if not value.isdigit() or len(value) > 9:
        raise invalid("X-Request-Timeout-Ms must be a whole number of milliseconds")
    return int(value) / 1000


def _model_path(parts: list[str]) -> tuple[str, str | None, str]:
    """[m] [versions v] [action] -> (model, version, action)."""
    name = parts[0]
    rest = parts[1:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        version = rest[1]
        rest = rest[2:]
    if len(rest) > 1 or not name:
        raise _no_route()
    return name, version, rest[0] if rest else ""


def _method(method: str, allowed: str) -> None:
    if method != allowed:
        raise _MethodNotAllowedError(method, allowed)


def _check_content_type(value: bytes) -> None:
    if not value.split(b";")[0].strip().lower().startswith(_ACCEPTED_TYPES):
        raise invalid(
            f"unsupported content type '{value.decode('latin-1')}'; send application/json, or "
            "application/octet-stream with Inference-Header-Content-Length"
        )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid("the request body must be a JSON object")
    return doc


def _load_config(doc: dict[str, Any]) -> dict[str, Any] | None:
    """``parameters.config``: a JSON manifest override, as Triton's load accepts."""
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise invalid("'parameters' must be an object")
    config = params.get("config")
    if config is None:
        return None
    if isinstance(config, str):
        config = _json_object(config.encode())
    if not isinstance(config, dict):
        raise invalid("'parameters.config' must be a JSON object")
    return config


def _no_route(path: str | None = None) -> ModelgateError:
    """The 404 of a path that names no route (not a missing model: OpenAI's routes answer
    it without ``model_not_found``)."""
    message = "no such route" if path is None else f"no route {path}"
    return ModelgateError(ErrorKind.NOT_FOUND, message, details={"resource": "route"})
