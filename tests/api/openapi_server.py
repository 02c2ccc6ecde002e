"""The server the OpenAPI tests describe: every optional route served (OAuth and JWKS with a
signing key, jobs, feedback, the result cache), credentials required, the operator's key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from modelgate.identity.jwt import generate_signing_key
from modelgate.server import Server
from tests.api.conftest import running_server

ADMIN = "admin-" + "o" * 26


@asynccontextmanager
async def openapi_server(data_dir: Path, **overrides: Any) -> AsyncIterator[Server]:
    settings: dict[str, Any] = {
        "auth": "required",
        "admin_key": SecretStr(ADMIN),
        "jwt_issuer": "https://modelgate.openapi.test",
        "jwt_signing_key": SecretStr(generate_signing_key("ES256")),
        **overrides,
    }
    async with running_server(data_dir, **settings) as server:
        yield server
