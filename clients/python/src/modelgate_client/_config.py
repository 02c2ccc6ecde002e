"""What ``Client`` and ``AsyncClient`` share: where the server is, the credential, the
timeouts and the retry budget, read once from arguments and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from modelgate_client import _errors
from modelgate_client._retry import DEFAULT_RETRY, RetryPolicy
from modelgate_client._version import __version__

__all__ = ["DEFAULT_TIMEOUT", "ClientConfig", "transport_error"]

#: 60 s to read an answer (a large batch on a busy model), 5 s to connect
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_BASE_URL = "http://localhost:8000"
_USER_AGENT = f"modelgate-client/{__version__}"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    base_url: str
    headers: dict[str, str]
    timeout: httpx.Timeout
    retry: RetryPolicy

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
    ) -> ClientConfig:
        """Arguments first, then ``MODELGATE_BASE_URL`` and ``MODELGATE_API_KEY``, then the
        defaults (``http://localhost:8000``, no credential)."""
        url = base_url or os.environ.get("MODELGATE_BASE_URL") or DEFAULT_BASE_URL
        key = api_key if api_key is not None else os.environ.get("MODELGATE_API_KEY")
        sent = {"User-Agent": _USER_AGENT, **(headers or {})}
        if key:
            sent["Authorization"] = f"Bearer {key}"
        if timeout is None:
            resolved = DEFAULT_TIMEOUT
        elif isinstance(timeout, httpx.Timeout):
            resolved = timeout
        else:
            resolved = httpx.Timeout(timeout)
        return cls(url.rstrip("/"), sent, resolved, retry or DEFAULT_RETRY)


def transport_error(error: httpx.TransportError) -> _errors.ModelgateError:
    """The SDK's exception for an httpx transport error."""
    if isinstance(error, httpx.TimeoutException):
        return _errors.TimeoutError(f"no answer in time: {error}")
    return _errors.ConnectionError(f"connection failed: {error}")


def timeout_ms(timeout: httpx.Timeout) -> int | None:
    """The read timeout in ms, for ``X-Request-Timeout-Ms`` (None when unbounded)."""
    return None if timeout.read is None else max(1, int(timeout.read * 1000))
