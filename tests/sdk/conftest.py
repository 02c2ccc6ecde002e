"""A real ``modelgate serve`` for the Python SDK's tests, and tenants made for them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import AUTH, RunningServer, start_server, stop_server


@pytest.fixture(scope="package")
def sdk_server(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    server = start_server(demo_models, tmp_path_factory.mktemp("sdk-server"))
    yield server
    code = stop_server(server)
    assert code == 0, f"modelgate exited with {code} on SIGTERM:\n{server.log.read_text()}"


@dataclass(frozen=True)
class Tenant:
    id: str
    key: str


def make_tenant(server: RunningServer, scopes: list[str], **plan: float) -> Tenant:
    """A new tenant on its own plan (``plan``: the plan's limits), with one key of ``scopes``."""
    name = f"sdk-{secrets.token_hex(4)}"
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as admin:
        created = admin.post("/admin/plans", json={"name": name, **plan})
        assert created.status_code == 201, created.text
        tenant = admin.post("/admin/tenants", json={"name": name, "plan": name})
        assert tenant.status_code == 201, tenant.text
        tenant_id = tenant.json()["id"]
        key = admin.post(f"/admin/tenants/{tenant_id}/keys", json={"name": name, "scopes": scopes})
        assert key.status_code == 201, key.text
    return Tenant(tenant_id, key.json()["secret"])


class RecordingTransport(httpx.HTTPTransport):
    """A real HTTP transport that keeps each request's headers and each answer's status."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response
