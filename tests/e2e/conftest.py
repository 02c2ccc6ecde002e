"""A real ``modelgate serve`` process on free ports, for clients the project did not write."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.faultproxy import FaultProxy


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


#: the bootstrap admin key every e2e server starts with (access control is on by default)
ADMIN_KEY = "e2e-admin-" + "k" * 24
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def run_cli(env: dict[str, str], *args: str) -> str:
    """``modelgate ARGS`` in a subprocess with ``env`` added; its stdout (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "modelgate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    repository: Path,
    workdir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> RunningServer:
    http_port, grpc_port = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"server-{http_port}.log"
    command = [
        sys.executable,
        "-m",
        "modelgate",
        "serve",
        "--model-repository",
        str(repository),
        "--data-dir",
        str(workdir / "data"),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        *args,
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MODELGATE_ADMIN_KEY": ADMIN_KEY, **(env or {})},
        )
    server = RunningServer(process, http_port, grpc_port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"modelgate exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_server(server)
    pytest.fail(f"modelgate was not ready in {timeout}s:\n{log.read_text()}")


def server_errors(server: RunningServer, limit: int = 8000) -> str:
    """The first tracebacks in a server's log, for an assertion's message."""
    text = server.log.read_text(errors="replace")
    start = text.find("Traceback")
    return text[start : start + limit] if start >= 0 else "(no traceback in the server's log)"


def stop_server(server: RunningServer) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


@pytest.fixture(scope="package")
def demo_server(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    server = start_server(demo_models, tmp_path_factory.mktemp("demo-server"))
    yield server
    code = stop_server(server)
    assert code == 0, f"modelgate exited with {code} on SIGTERM:\n{server.log.read_text()}"


ADMIN_DSN = os.environ.get(
    "MODELGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def admin_sql(dsn: str, statement: str) -> object:
    """Run one statement on ``dsn`` and return its first value."""
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


@pytest.fixture
def postgres_behind_proxy() -> Iterator[tuple[str, FaultProxy]]:
    """A database of this test's own on the machine's PostgreSQL, and a TCP fault proxy in
    front of the server (the database's direct URL; point modelgate at the proxy's port).
    The database is dropped afterwards; the server itself is never touched."""
    import asyncio
    import secrets

    name = f"modelgate_faults_{secrets.token_hex(6)}"
    asyncio.run(admin_sql(ADMIN_DSN, f'CREATE DATABASE "{name}"'))
    base = ADMIN_DSN.rsplit("/", 1)[0]
    host, port = base.rsplit("@", 1)[1].split(":")
    proxy = FaultProxy(host, int(port))
    try:
        yield f"{base}/{name}", proxy
    finally:
        proxy.close()
        asyncio.run(admin_sql(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
