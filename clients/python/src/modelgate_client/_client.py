"""``Client``: the synchronous client (``AsyncClient`` in ``_async_client`` mirrors it
method for method; the operations themselves live in ``_operations``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from modelgate_client import _operations as ops
from modelgate_client._config import ClientConfig, timeout_ms, transport_error
from modelgate_client._errors import TimeoutError, error_from_response
from modelgate_client._models import (
    Deployment,
    Embeddings,
    FeedbackItem,
    InferResult,
    Job,
    JobPage,
    JobResult,
    ModelInfo,
    ModelMetadata,
    Quota,
    UsageReport,
)
from modelgate_client._retry import RetryPolicy

__all__ = ["Client"]

T = TypeVar("T")

#: how the client waits between attempts and polls (a seam for tests)
_sleep = time.sleep


class Client:
    """A modelgate client over one connection pool.

    ``base_url`` defaults to ``MODELGATE_BASE_URL`` then ``http://localhost:8000``;
    ``api_key`` to ``MODELGATE_API_KEY`` (sent as ``Authorization: Bearer``). ``timeout``
    (seconds or an ``httpx.Timeout``; default 60 s to read, 5 s to connect) applies to each
    attempt and may be overridden per call; ``retry`` is the retry budget. Pass
    ``http_client`` to share an ``httpx.Client`` (its pool and transport; the client does not
    close it), or ``transport`` (e.g. :class:`modelgate_client.testing.MockTransport`).
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ValueError("give http_client or transport, not both")
        self._config = ClientConfig.resolve(base_url, api_key, timeout, retry, headers)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(transport=transport)
        self.jobs = Jobs(self)
        self.deployments = Deployments(self)

    @property
    def base_url(self) -> str:
        return self._config.base_url

    def close(self) -> None:
        """Close the connection pool (not an ``http_client`` passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- inference ---------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        explain: bool = False,
        timeout: float | httpx.Timeout | None = None,
    ) -> InferResult:
        """Run ``model`` (``version``: the deployment's choice when None) on ``inputs``, a
        mapping of input name to numpy array (or anything ``numpy.asarray`` takes; text
        arrays are sent as BYTES). ``outputs`` names the outputs wanted (all when None).
        ``binary`` sends and asks for Triton's binary tensor data; False sends JSON. Needs
        numpy (``pip install 'modelgate-client[numpy]'``). ``explain`` asks for each row's
        per-feature attributions (``result.explanation``), from a model whose manifest
        allows it (docs/explanations.md): a ``BadRequestError`` from one that does not."""
        limit = self._timeout(timeout)
        call = ops.infer(
            model,
            inputs,
            version=version,
            outputs=outputs,
            binary=binary,
            request_id=request_id,
            parameters={**(parameters or {}), "explain": True} if explain else parameters,
            timeout_ms=timeout_ms(limit),
        )
        return self._send(call, limit)

    def embeddings(
        self,
        model: str,
        input: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
        *,
        dimensions: int | None = None,
        user: str | None = None,
        timeout: float | httpx.Timeout | None = None,
    ) -> Embeddings:
        """OpenAI-style embeddings of ``input`` (a text, texts, or token ids)."""
        call = ops.embeddings(model, input, dimensions=dimensions, user=user)
        return self._send(call, self._timeout(timeout))

    # -- models and health -------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """The models the caller may use (``/v1/models``)."""
        return self._send(ops.models())

    def model_metadata(self, model: str, version: str | int | None = None) -> ModelMetadata:
        """A model's inputs, outputs, platform and versions."""
        return self._send(ops.model_metadata(model, version))

    def model_ready(self, model: str, version: str | int | None = None) -> bool:
        """Whether the model (version) is loaded and answering."""
        return self._send(ops.model_ready(model, version))

    def server_metadata(self) -> dict[str, Any]:
        """The server's name, version and OIP extensions (``GET /v2``)."""
        return self._send(ops.server_metadata())

    def is_live(self) -> bool:
        """``/v2/health/live``: the process answers."""
        return self._send(ops.health("live"))

    def is_ready(self) -> bool:
        """``/v2/health/ready``: the server takes inference requests."""
        return self._send(ops.health("ready"))

    # -- feedback and usage ------------------------------------------------------------------

    def feedback(
        self,
        request_id: str | None = None,
        label: int | None = None,
        *,
        labels: Sequence[int] | None = None,
        row: int | None = None,
        items: Sequence[FeedbackItem] | None = None,
    ) -> int:
        """Send ground truth for earlier predictions (by their ``request_id``): one
        ``label`` (for row ``row``), ``labels`` (one per row), or a batch of ``items``.
        Returns the number of rows labelled."""
        if items is None:
            if request_id is None:
                raise ValueError("give request_id and label(s), or items")
            found = None if labels is None else list(labels)
            items = [FeedbackItem(request_id, label=label, labels=found, row=row)]
        return self._send(ops.feedback(items))

    def usage(
        self,
        *,
        tenant: str | None = None,
        key: str | None = None,
        model: str | None = None,
        since: str | None = None,
        until: str | None = None,
        group_by: str | None = None,
    ) -> UsageReport:
        """Usage and cost (``/admin/usage``): a tenant's key sees its own tenant only.
        ``since``/``until`` are ISO 8601 dates or datetimes; ``group_by`` is comma-separated
        from day, tenant, key, model, version (server default: day)."""
        query = {"tenant": tenant, "key": key, "model": model, "since": since, "until": until}
        return self._send(ops.usage(**query, group_by=group_by))

    def quotas(self, tenant_id: str) -> list[Quota]:
        """A tenant's quotas and how much of each is used."""
        return self._send(ops.quotas(tenant_id))

    # -- sending -----------------------------------------------------------------------------

    def _timeout(self, timeout: float | httpx.Timeout | None) -> httpx.Timeout:
        if timeout is None:
            return self._config.timeout
        return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)

    def _send(self, call: ops.Call[T], timeout: httpx.Timeout | None = None) -> T:
        config = self._config
        request = self._http.build_request(
            call.method,
            config.base_url + call.path,
            params=call.params,
            json=call.json,
            content=call.content,
            headers={**config.headers, **call.headers},
            timeout=timeout or config.timeout,
        )
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                elapsed = time.monotonic() - started
                delay = config.retry.delay_after_error(
                    exc, safe=call.safe, attempt=attempt, elapsed=elapsed
                )
                if delay is None:
                    raise transport_error(exc) from exc
                _sleep(delay)
                continue
            status = response.status_code
            if status < 400 or status in call.ok_statuses:
                return call.parse(response)
            elapsed = time.monotonic() - started
            delay = config.retry.delay_after_response(
                response, safe=call.safe, attempt=attempt, elapsed=elapsed, keyed=call.keyed
            )
            if delay is None:
                raise error_from_response(response)
            _sleep(delay)


class Jobs:
    """Asynchronous jobs (``client.jobs``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def submit(
        self,
        model: str,
        requests: Sequence[Mapping[str, Any]],
        *,
        version: str | int | None = None,
        priority: int | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a job of one or more OIP requests (documents with ``inputs`` as JSON
        ``data``; :func:`modelgate_client.job_request` builds one from arrays). An
        ``Idempotency-Key`` is generated when none is given, so a retried submission answers
        the job the first one created."""
        call = ops.job_submit(
            model,
            requests,
            version=version,
            priority=priority,
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
        )
        return self._client._send(call)

    def get(self, job_id: str) -> Job:
        """A job's status, progress and error."""
        return self._client._send(ops.job_get(job_id))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job."""
        return self._client._send(ops.job_cancel(job_id))

    def list(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        after: str | None = None,
        limit: int = 20,
    ) -> JobPage:
        """A page of the tenant's jobs, newest first (``after``: the last id of the page
        before)."""
        return self._client._send(
            ops.job_list(status=status, model=model, after=after, limit=limit)
        )

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job is finished and return it (whatever its status: check
        ``job.status``). ``on_progress`` is called with the job whenever its status or
        progress changed (:class:`modelgate_client.TextProgress` prints a line to stderr).
        Raises :class:`modelgate_client.TimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = None
        while True:
            job = self.get(job_id)
            state = (job.status, job.progress)
            if on_progress is not None and state != seen:
                on_progress(job)
            seen = state
            if job.finished:
                return job
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout} s")
            _sleep(poll_interval)

    def results(self, job_id: str, *, page_size: int = 100) -> Iterator[JobResult]:
        """The job's item results in item order, fetched a page at a time as the iteration
        goes (the items done so far, while the job still runs)."""
        after = -1
        while True:
            call = ops.job_results(job_id, after=after, limit=page_size)
            page, after, more = self._client._send(call)
            yield from page
            if not more:
                return


class Deployments:
    """A model's deployment: versions, traffic split, canary, shadow (``client.deployments``;
    an operator's key, scope ``tenants:admin``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, model: str) -> Deployment:
        """The model's deployment (NotFoundError when it has none)."""
        return self._client._send(ops.deployment_get(model))

    def put(
        self,
        model: str,
        default_version: int,
        *,
        split: Sequence[Mapping[str, int]] = (),
        canary: Mapping[str, Any] | None = None,
        shadow: Mapping[str, Any] | None = None,
    ) -> Deployment:
        """Replace the deployment: ``split`` as ``[{"version", "weight"}]`` summing to 100,
        or a ``canary`` (``{"version", "steps", "step_seconds", ...}``), and a ``shadow``
        (``{"version", "percent"}``)."""
        spec = {"default_version": default_version, "split": [dict(v) for v in split]}
        spec.update(canary=canary, shadow=shadow)
        return self._client._send(ops.deployment_put(model, spec))

    def promote(
        self, model: str, version: int | None = None, *, idempotency_key: str | None = None
    ) -> Deployment:
        """Make the canary (or ``version``) the default."""
        body = None if version is None else {"version": version}
        call = ops.deployment_action(model, "promote", body, idempotency_key)
        return self._client._send(call)

    def rollback(self, model: str, *, idempotency_key: str | None = None) -> Deployment:
        """End the split or canary: the default version takes all traffic again."""
        return self._client._send(ops.deployment_action(model, "rollback", None, idempotency_key))
