"""``POST /v2/models/{m}[/versions/{v}]/infer``: the hot path, JSON or binary tensor data in
and out; and ``GET`` of the same path for models that cache (api/rest/edge.py)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from modelgate.api.call import deadline_after
from modelgate.api.credentials import PRINCIPAL, credential_from
from modelgate.api.oip_codec import decode_infer_request, encode_infer_response
from modelgate.api.rest.asgi import (
    ARRIVED,
    CONNECTION,
    LOG_LINE,
    MODEL,
    REFUSED,
    Connection,
    Receive,
    Scope,
    Send,
    body_owner,
    body_too_large,
    declares_over,
    receive_body,
    respond,
)
from modelgate.api.rest.edge import decode_query_input, edge_headers, etag_of, not_modified
from modelgate.api.rest.errors import (
    MethodNotAllowedError,
    hold_refusal,
    rate_limit_headers,
    send_refusal,
)
from modelgate.api.rest.media_type import check_content_type
from modelgate.api.rest.shedding import abandon, drop_if_gone, send_shed
from modelgate.core.access.identity import Scope as Permission  # "Scope" here is the ASGI scope
from modelgate.core.gateway.regions import valid_region
from modelgate.errors import invalid

if TYPE_CHECKING:
    from modelgate.api.rest.app import RestApp

__all__ = ["infer"]

_JSON = [(b"content-type", b"application/json")]
#: the headers the route reads (the rest are skipped with one set lookup each)
_READ_HEADERS = frozenset(
    (
        b"content-type",
        b"content-length",
        b"authorization",
        b"inference-header-content-length",
        b"x-api-key",
        b"x-request-timeout-ms",
        b"cache-control",
        b"if-none-match",
        b"content-encoding",
    )
)


async def infer(
    app: RestApp, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
) -> None:
    service = app.service
    edge = scope["method"] == "GET"
    if edge and service.cache is None:  # GET answers only where a cache can
        raise MethodNotAllowedError("GET", "POST")
    header_length = timeout_s = if_none_match = None
    authorization = api_key = cache_control = content_encoding = None
    max_body = app.limits.max_body_bytes
    declared_over = False  # Content-Length says the body is over the limit: 413, unread
    for key, value in scope["headers"]:  # one pass over the headers: the hot path
        if key not in _READ_HEADERS:  # most headers: one set lookup
            continue
        if key == b"content-type":
            check_content_type(value)
        elif key == b"content-length":
            declared_over = declared_over or declares_over(value, max_body)
        elif key == b"authorization":
            authorization = value.decode("latin-1")
        elif key == b"inference-header-content-length":
            try:
                header_length = int(value)
            except ValueError:
                raise invalid("Inference-Header-Content-Length must be an integer") from None
        elif key == b"x-api-key":
            api_key = value.decode("latin-1")
        elif key == b"x-request-timeout-ms":
            timeout_s = _timeout_s(value)
        elif key == b"cache-control":
            cache_control = value.decode("latin-1")
        elif key == b"content-encoding":  # gzip or deflate: inflated as it arrives
            content_encoding = value
        else:
            if_none_match = value
    overload = app.overload
    arrived = None
    connection: Connection | None = None
    if overload is not None:  # the request's own wait (sojourn), measured before any work
        connection = scope.get(CONNECTION)  # None: not our protocol
        arrived = scope.get(ARRIVED)
        if connection is not None:  # its bytes may have waited in the kernel before that
            received = connection.received_at()
            if received is not None and arrived is not None and received < arrived:
                arrived = received
        waited = 0.0 if arrived is None else overload.sojourn(arrived)
        # a client gone while this request waited: no work at all (under load, the socket
        # itself is asked)
        drop_if_gone(
            connection, app.metrics, "oip", overload.shedding or waited >= overload.target_s
        )
        if arrived is not None and (
            overload.too_late(waited) or (timeout_s is not None and waited >= timeout_s)
        ):
            await send_shed(send, scope, overload)  # its client is about to give up
            app.metrics.http_answer("oip", 503)
            return
    deadline = None
    if timeout_s is not None:  # counted from the request's first bytes
        if arrived is None:
            arrived = scope.get(ARRIVED)
        deadline = deadline_after(timeout_s) if arrived is None else arrived + timeout_s
    principal = None
    if app.authenticator is not None:
        credential = credential_from(authorization, api_key)
        principal = await app.pipeline.authentication(app.authenticator, credential, scope)
        scope[PRINCIPAL] = principal  # whom the error path counts a failure against; the log
        if app.refusals is not None:  # refused again while certain, before the body is read
            refusal = app.refusals.refused(principal, name, version)
            if refusal is not None:
                scope[REFUSED] = True
                held: float | None = 0.0
                if app.backpressure is not None:  # held when the connection keeps at it
                    held = await hold_refusal(app.backpressure, scope, refusal.retry_after_s())
                    if held:
                        refusal.seen_at = app.refusals.clock()  # its headers counted to now
                await send_refusal(send, scope, refusal, close=held is None)
                app.metrics.http_answer("oip", 429)
                scope[LOG_LINE] = app.refusals.line(principal)  # at most one a second
                return
    if overload is not None and overload.shedding and overload.refuses(principal):
        await send_shed(send, scope, overload)  # the queue is too long: before the body is read
        app.metrics.http_answer("oip", 503)
        return
    spec = None
    if edge:  # only models that cache answer GET (the newest version's manifest says)
        await service.catalog.authorize(principal, name, version, Permission.INFER)
        spec = (await service.registry.manifest(name)).cache
        if spec is None:
            raise MethodNotAllowedError("GET", "POST")
        body = decode_query_input(scope["query_string"])
        header_length = None
    else:
        if declared_over:
            raise body_too_large(max_body)
        owner = None if content_encoding is None else body_owner(scope)
        body = await receive_body(receive, max_body, content_encoding, owner)
        if connection is not None:
            drop_if_gone(connection, app.metrics, "oip")  # gone while its body was read
    request = decode_infer_request(name, version, body, header_length, app.limits.max_elements)
    request.deadline = deadline
    request.cache_control = cache_control
    if connection is None:
        response = await service.infer(request, principal)
    else:  # cancelled if the client goes while it waits for the model: the batcher drops it
        connection.watch(asyncio.current_task())
        try:
            response = await service.infer(request, principal)
        except asyncio.CancelledError:
            gone = abandon(connection, app.metrics, "oip")
            if gone is None:
                raise
            raise gone from None
        finally:
            connection.watch(None)
    scope[MODEL] = (name, response.model_version)  # the version that answered
    payload, json_length = encode_infer_response(response, request.parameters)
    if json_length is None:
        headers = [*_JSON]
    else:
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(json_length).encode()),
        ]
    if response.rate_limit is not None:
        headers += rate_limit_headers(response.rate_limit)
    # which version answered, for clients and balancers that read no body (deployments)
    headers.append((b"x-modelgate-model-version", response.model_version.encode()))
    score = response.parameters.get("anomaly_score")
    # the anomaly check flagged the inputs; a number only (a third-party node's parameters
    # pass through a gateway, and a header value must never carry what it sent)
    if response.parameters.get("anomalous") and type(score) in (int, float):
        headers.append((b"x-modelgate-anomaly", str(score).encode()))
    if response.cache is not None:
        headers.append((b"x-modelgate-cache", response.cache.encode()))
    if "fallback_from" in response.parameters:  # a fallback model answered
        headers.append((b"x-modelgate-fallback", response.model_name.encode()))
    region = response.parameters.get("region")
    # the region a gateway validated for the node that answered (core/gateway/regions.py)
    if isinstance(region, str) and valid_region(region):
        headers.append((b"x-modelgate-region", str(region).encode()))
    status = 200
    if edge:
        etag = etag_of(payload)
        headers += edge_headers(spec, request, response, etag)
        if not_modified(if_none_match, etag):
            status, payload = 304, b""
            headers = [h for h in headers if h[0] != b"content-type"]
    await respond(send, status, payload, headers)
    app.metrics.http_answer("oip", status)


def _timeout_s(value: bytes) -> float:
    """``X-Request-Timeout-Ms``: how long the caller waits, in whole milliseconds."""
    if not value.isdigit() or len(value) > 9:
        raise invalid("X-Request-Timeout-Ms must be a whole number of milliseconds")
    return int(value) / 1000
