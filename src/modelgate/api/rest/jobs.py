"""``/v1/jobs``: asynchronous inference jobs over REST (errors in OpenAI's shape, like every
``/v1`` route).

Routes::

    POST /v1/jobs                    submit (JSON, or JSON lines with the job in the query)
    GET  /v1/jobs                    list the caller's jobs: ?status=&model=&after=&limit=
    GET  /v1/jobs/{id}               status, progress, timestamps, attempts, error
    GET  /v1/jobs/{id}/results       item results: ?after=<index>&limit=
    POST /v1/jobs/{id}/cancel        cancel a queued or running job

A JSON submission is ``{"model": "m", "version": "1", "request": {<OIP request>}}`` (one
inference) or ``{"model": "m", "requests": [{...}, ...]}`` (a batch), with optional
``priority`` (0-9) and ``webhook_url``. With ``Content-Type: application/jsonl`` (or
``application/x-ndjson``) the body is one OIP request per line and ``model``, ``version``,
``priority`` and ``webhook_url`` come as query parameters. ``Idempotency-Key`` (1 to 255
visible ASCII characters) makes a retried POST answer the job the first one created.
Tensors travel as JSON ``data`` (binary tensor data is for synchronous requests only).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson

from modelgate.api.job_codec import decode_job_item
from modelgate.api.rest.asgi import Receive, Scope, read_body
from modelgate.api.rest.media_type import check_content_type
from modelgate.core.access.identity import Principal
from modelgate.core.jobs.jobs import Job, JobResult, JobState, job_document
from modelgate.core.jobs.service import JobService, JobSpec
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["JobRoutes"]


Handler = Callable[[Scope, Receive, Principal | None], Awaitable[bytes]]

_JOB_KEYS = frozenset({"model", "version", "request", "requests", "priority", "webhook_url"})
_LINE_QUERY = frozenset({"model", "version", "priority", "webhook_url"})
_LIST_QUERY = frozenset({"status", "model", "after", "limit"})
_RESULTS_QUERY = frozenset({"after", "limit"})
_LINES_TYPES = (b"application/jsonl", b"application/x-ndjson", b"application/json-lines")


class JobRoutes:
    def __init__(self, service: JobService, *, max_body_bytes: int, max_elements: int) -> None:
        self.service = service
        self._max_body = max_body_bytes
        self._max_elements = max_elements

    def route(self, parts: list[str]) -> dict[str, Handler]:
        """The handlers of ``/v1/jobs/<parts>`` by method; NOT_FOUND for no such route."""
        if not parts or parts == [""]:
            return {"GET": self._list, "POST": self._submit}
        if len(parts) == 1 and parts[0]:
            job_id = parts[0]
            return {"GET": lambda s, r, p: self._get(p, job_id)}
        if len(parts) == 2 and parts[0] and parts[1] == "results":
            job_id = parts[0]
            return {"GET": lambda s, r, p: self._results(s, p, job_id)}
        if len(parts) == 2 and parts[0] and parts[1] == "cancel":
            job_id = parts[0]
            return {"POST": lambda s, r, p: self._cancel(p, job_id)}
        raise ModelgateError(
            ErrorKind.NOT_FOUND, "no such route under /v1/jobs", details={"resource": "route"}
        )

    async def _submit(self, scope: Scope, receive: Receive, principal: Principal | None) -> bytes:
        content_type, key = b"application/json", None
        for name, value in scope["headers"]:
            if name == b"content-type":
                check_content_type(value)
                content_type = value.split(b";")[0].strip().lower()
            elif name == b"idempotency-key":
                key = _idempotency_key(value)
        try:
            body = await read_body(scope, receive, self._max_body)
        except ModelgateError as exc:
            if exc.kind is not ErrorKind.PAYLOAD_TOO_LARGE:
                raise
            raise ModelgateError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"a job's body may be at most {self._max_body} bytes (jobs_max_bytes)",
                details={"size_limit": "jobs_max_bytes", "allowed": self._max_body},
            ) from None
        query = _query(scope, _LINE_QUERY if content_type in _LINES_TYPES else frozenset())
        if content_type in _LINES_TYPES:
            doc: dict[str, Any] = dict(query)
            if "priority" in doc:
                doc["priority"] = _integer_text(doc["priority"], "priority", minimum=0)
            doc["requests"] = _lines(body)
        else:  # JSON whatever the type says (curl -d), as on every inference route
            doc = _object(body)
        spec = self._spec(doc, key)
        job, _ = await self.service.submit(principal, spec)
        return orjson.dumps(job_document(job))

    def _spec(self, doc: dict[str, Any], key: str | None) -> JobSpec:
        unknown = set(doc) - _JOB_KEYS
        if unknown:
            raise invalid(f"unknown field '{sorted(unknown)[0]}'")
        model = doc.get("model")
        if not isinstance(model, str) or not 1 <= len(model) <= 256:
            raise invalid("'model' must be a model name")
        version = doc.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
            version = str(version)
        if version is not None and (not isinstance(version, str) or not 1 <= len(version) <= 64):
            raise invalid("'version' must be a version number")
        if ("request" in doc) == ("requests" in doc):
            raise invalid("give either 'request' (one inference) or 'requests' (a batch)")
        items = [doc["request"]] if "request" in doc else doc["requests"]
        if not isinstance(items, list) or not items:
            raise invalid("'requests' must be a non-empty list of OIP inference requests")
        limit = self.service.policy.max_items
        if len(items) > limit:
            raise ModelgateError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"a job holds at most {limit} requests, not {len(items)} (jobs_max_items)",
                details={"size_limit": "jobs_max_items", "allowed": limit},
            )
        requests = []
        for i, item in enumerate(items):
            where = "request" if "request" in doc else f"requests[{i}]"
            if not isinstance(item, dict):
                raise invalid(f"{where} must be an OIP inference request object")
            try:
                requests.append(decode_job_item(model, version, item, self._max_elements))
            except ModelgateError as exc:
                raise ModelgateError(exc.kind, f"{where}: {exc.message}") from None
        priority = doc.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise invalid("'priority' must be an integer from 0 to 9")
        webhook = doc.get("webhook_url")
        if webhook is not None and not isinstance(webhook, str):
            raise invalid("'webhook_url' must be a string")
        canonical: dict[str, Any] = {"model": model, "version": version, "items": items}
        canonical.update(priority=priority, webhook_url=webhook)
        digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return JobSpec(model, version, items, priority, webhook, key, digest, requests)

    async def _get(self, principal: Principal | None, job_id: str) -> bytes:
        return orjson.dumps(job_document(await self.service.get(principal, job_id)))

    async def _cancel(self, principal: Principal | None, job_id: str) -> bytes:
        return orjson.dumps(job_document(await self.service.cancel(principal, job_id)))

    async def _list(self, scope: Scope, receive: Receive, principal: Principal | None) -> bytes:
        query = _query(scope, _LIST_QUERY)
        state = None
        if "status" in query:
            try:
                state = JobState(query["status"])
            except ValueError:
                names = ", ".join(s.value for s in JobState)
                raise invalid(f"'status' must be one of {names}") from None
        limit = _integer_text(query.get("limit", "20"), "limit")
        jobs = await self.service.list_jobs(
            principal,
            state=state,
            model=query.get("model"),
            after=query.get("after"),
            limit=limit,
        )
        more = len(jobs) == limit and bool(
            await self.service.list_jobs(principal, state=state, model=query.get("model"),
                                    after=jobs[-1].id, limit=1)
        )  # fmt: skip
        return orjson.dumps(_page([job_document(j) for j in jobs], jobs, more))

    async def _results(self, scope: Scope, principal: Principal | None, job_id: str) -> bytes:
        query = _query(scope, _RESULTS_QUERY)
        after = _integer_text(query.get("after", "-1"), "after", minimum=-1)
        limit = _integer_text(query.get("limit", "100"), "limit")
        job, results = await self.service.results(principal, job_id, after=after, limit=limit)
        data = [_result_document(r) for r in results]
        last = results[-1].index if results else after
        return orjson.dumps(
            {
                "object": "list",
                "job_id": job.id,
                "status": job.state.value,
                "data": data,
                "has_more": len(results) == limit,
                "next_after": last,
            }
        )


def _page(data: list[dict[str, Any]], jobs: list[Job], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": jobs[0].id if jobs else None,
        "last_id": jobs[-1].id if jobs else None,
        "has_more": more,
    }


def _result_document(result: JobResult) -> dict[str, Any]:
    doc: dict[str, Any] = {"index": result.index, "status": "ok" if result.ok else "error"}
    if result.ok:
        doc["response"] = result.response
    else:
        doc["error"] = result.error
    return doc


def _object(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid("the request body must be a JSON object")
    return doc


def _lines(body: bytes) -> list[Any]:
    items = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise invalid(f"line {number}: malformed JSON: {exc}") from None
    return items


def _query(scope: Scope, allowed: frozenset[str]) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    try:
        parsed = parse_qs(raw, keep_blank_values=True, strict_parsing=False, max_num_fields=16)
    except ValueError as exc:
        raise invalid(f"malformed query string: {exc}") from None
    unknown = set(parsed) - allowed
    if unknown:
        raise invalid(f"unknown query parameter '{sorted(unknown)[0]}'")
    if any(len(values) > 1 for values in parsed.values()):
        raise invalid("a query parameter is given twice")
    return {name: values[0] for name, values in parsed.items()}


def _integer_text(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,9}", value):
        number = int(value)
    else:
        raise invalid(f"'{name}' must be an integer")
    if number < minimum:
        raise invalid(f"'{name}' must be at least {minimum}")
    return number


def _idempotency_key(value: bytes) -> str:
    if not 1 <= len(value) <= 255 or not all(0x21 <= b <= 0x7E for b in value):
        raise invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return value.decode("ascii")
