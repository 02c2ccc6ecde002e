"""HTTP hygiene of a real ``modelgate serve`` (issue 16, findings 2, 4 and 5): a huge body
without a credential is refused from its headers and never read; oversized headers answer
431 and close; a client that trickles its headers is cut off after the header timeout, an
idle connection after the keep-alive timeout; connections over the cap are closed; health
checks answer throughout. ``X-Forwarded-For`` is ignored unless
``MODELGATE_FORWARDED_ALLOW_IPS`` names the peer.

No assertion here is on speed: each bounds a wait, so that a server that never answers or
never closes fails instead of hanging.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.access.keys import issue_key
from tests.conftest import FIXTURE_MODELS
from tests.e2e.conftest import AUTH, RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

HEADER_LIMIT = 16 * 1024
HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 3
KEEPALIVE_S = 1
MAX_CONNECTIONS = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        FIXTURE_MODELS,
        tmp_path_factory.mktemp("hygiene"),
        env={
            "MODELGATE_HTTP_MAX_HEADER_BYTES": str(HEADER_LIMIT),
            "MODELGATE_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_S),
            "MODELGATE_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_S),
            "MODELGATE_HTTP_KEEPALIVE_SECONDS": str(KEEPALIVE_S),
            "MODELGATE_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            # this module's clients fail on purpose; none of them is to be blocked
            "MODELGATE_ABUSE_AUTH_FAILURES_PER_IP": "100000",
            "MODELGATE_ABUSE_SLOW_AFTER": "100000",
        },
    )
    yield running
    assert stop_server(running) == 0, running.log.read_text()


def _connect(server: RunningServer, source: str | None = None) -> socket.socket:
    sock = socket.socket()
    if source is not None:
        sock.bind((source, 0))
    sock.settimeout(15)
    sock.connect(("127.0.0.1", server.http_port))
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as a
    close); ``socket.timeout`` if it keeps it open longer than the socket's timeout."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _rss_kib(server: RunningServer) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


class _HealthProbe:
    """Asks /v2/health/live in a loop on its own thread; records each answer's status."""

    def __init__(self, server: RunningServer) -> None:
        self._url = f"{server.url}/v2/health/live"
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    self.statuses.append(client.get(self._url).status_code)
                except httpx.HTTPError:
                    self.statuses.append(0)
                time.sleep(0.05)

    def __enter__(self) -> _HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        deadline = time.monotonic() + 10  # at least a few answers, however fast the test was
        while len(self.statuses) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(20)


def test_a_50_mib_body_without_a_credential_is_refused_unread(server: RunningServer) -> None:
    rss_before = _rss_kib(server)
    body = b"x" * (1024 * 1024)
    sent = 0
    with _HealthProbe(server) as probe, _connect(server) as sock:
        sock.sendall(
            b"POST /admin/tenants HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 52428800\r\n\r\n"
        )
        sock.settimeout(10)
        answer = sock.recv(65536)  # the answer comes before any of the body is sent
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(50):
                sock.sendall(body)
                sent += len(body)

    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 401"), answer[:300]
    assert b"connection: close" in head
    assert sent < 50 * len(body)  # the server closed the connection instead of reading it
    assert _rss_kib(server) - rss_before < 20 * 1024
    assert probe.statuses and set(probe.statuses) == {200}


def test_oversized_headers_answer_431_and_close(server: RunningServer) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-pad: "
            + b"p" * (HEADER_LIMIT + 1024)
            + b"\r\n\r\n"
        )
        sock.settimeout(5)
        answer = _read_until_closed(sock)  # times out if the server keeps the connection

    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:300]


def test_a_header_flood_is_cut_off_and_health_checks_go_on(server: RunningServer) -> None:
    # one endless header value: httptools would buffer it all before calling back
    chunk = b"p" * (64 * 1024)
    sent = 0
    with _HealthProbe(server) as probe, _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-flood: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(1600):  # 100 MiB
                sock.sendall(chunk)
                sent += len(chunk)
        answer = _read_until_closed(sock)

    assert sent < 1600 * len(chunk)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:300]
    assert probe.statuses and set(probe.statuses) == {200}


def test_headers_that_arrive_too_slowly_are_cut_off(server: RunningServer) -> None:
    answer = b""
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-slow: ")
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 10
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while time.monotonic() < deadline:  # a header byte each 0.25 s, never the end
                sock.sendall(b"s")
                readable, _, _ = select.select([sock], [], [], 0.25)
                if readable:
                    answer = sock.recv(4096)
                    break

    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]


def test_a_body_that_arrives_too_slowly_is_cut_off(server: RunningServer) -> None:
    """Headers in time, then a body trickled a byte at a time: it would hold its request
    (and the batcher slot behind it) for ever."""
    head = (
        "POST /v2/models/doubler/infer HTTP/1.1\r\nhost: x\r\n"
        f"authorization: {AUTH['Authorization']}\r\n"
        "content-type: application/json\r\ncontent-length: 100000\r\n\r\n"
    )
    answer = b""
    with _connect(server) as sock:
        sock.sendall(head.encode() + b'{"inputs": ')
        deadline = time.monotonic() + BODY_TIMEOUT_S + HEADER_TIMEOUT_S + 10
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while time.monotonic() < deadline:  # a body byte each 0.25 s, never the end
                sock.sendall(b" ")
                readable, _, _ = select.select([sock], [], [], 0.25)
                if readable:
                    answer = sock.recv(4096)
                    break

    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"body not received in time" in answer


def test_a_connection_that_sends_nothing_is_closed(server: RunningServer) -> None:
    with _connect(server) as sock:
        sock.settimeout(HEADER_TIMEOUT_S + 10)
        answer = _read_until_closed(sock)

    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]


def test_an_idle_kept_alive_connection_is_closed(server: RunningServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        # uvicorn's default was 5 s: this waits less than that for the close
        sock.settimeout(KEEPALIVE_S + 3)
        answer = _read_until_closed(sock)

    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b'{"live":true}')  # one answer, then the close
    assert b"connection: close" not in answer.lower()  # kept alive, then closed for idling


def test_connections_over_the_cap_are_closed(server: RunningServer) -> None:
    held = [_connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # each has begun a request, so none is idle yet
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        time.sleep(0.3)
        with _connect(server) as extra:
            extra.settimeout(HEADER_TIMEOUT_S - 0.5)
            try:
                closed = _read_until_closed(extra) == b""
            except TimeoutError:
                closed = False
    finally:
        for sock in held:
            sock.close()

    assert closed
    # and once they are gone, new connections are served again
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/v2/health/live", timeout=2).status_code == 200:
                break
        time.sleep(0.1)
    else:
        pytest.fail("no connection was served after the held ones closed")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(min_value=0, max_value=3 * HEADER_LIMIT),
    count=st.integers(min_value=1, max_value=64),
    value=st.binary(min_size=1, max_size=8).map(
        lambda b: bytes(c for c in b if 0x21 <= c < 0x7F) or b"v"
    ),
)
def test_headers_of_any_size_never_answer_500(
    server: RunningServer, size: int, count: int, value: bytes
) -> None:
    each = max(size // count, 1)
    headers = b"".join(b"x-h%d: %s\r\n" % (i, (value * each)[:each]) for i in range(count))
    request = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n"
    request = request.replace(b"host: x", b"host: x\r\nconnection: close", 1)
    with _connect(server) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        sock.settimeout(5)
        answer = _read_until_closed(sock)

    status = answer[9:12]
    if len(request) > HEADER_LIMIT + 64:
        assert answer == b"" or status == b"431", answer[:200]
    elif len(request) <= HEADER_LIMIT:
        assert status == b"200", answer[:200]
    assert not status.startswith(b"5")


# -- X-Forwarded-For ------------------------------------------------------------------------


def _throttled_server(tmp_path: Path, **env: str) -> RunningServer:
    return start_server(
        FIXTURE_MODELS,
        tmp_path,
        env={
            "MODELGATE_ABUSE_AUTH_FAILURES_PER_IP": "5",
            "MODELGATE_ABUSE_SLOW_AFTER": "100",
            **env,
        },
    )


def _bad_key() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_key().secret}"}


def test_forwarded_addresses_are_ignored_by_default(tmp_path: Path) -> None:
    server = _throttled_server(tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            # bad keys, each claiming another address: the real one is counted
            statuses = [
                client.get(
                    "/admin/tenants",
                    headers={**_bad_key(), "X-Forwarded-For": f"198.51.100.{i}"},
                ).status_code
                for i in range(6)
            ]
            # a forged address (127.0.0.2's) is not blocked by it: 127.0.0.1 is
            forged = {**_bad_key(), "X-Forwarded-For": "127.0.0.2"}
            assert client.get("/admin/tenants", headers=forged).status_code == 429
            blocked = client.get("/admin/tenants", headers=AUTH)
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=server.url, timeout=10, transport=transport) as other:
            elsewhere = other.get("/admin/tenants", headers=AUTH)
    finally:
        assert stop_server(server) == 0

    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    assert blocked.status_code == 429
    assert elsewhere.status_code == 200


def test_forwarded_addresses_are_honored_from_the_peers_named(tmp_path: Path) -> None:
    server = _throttled_server(tmp_path, MODELGATE_FORWARDED_ALLOW_IPS="127.0.0.1")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            guesser = {"X-Forwarded-For": "198.51.100.7"}
            statuses = [
                client.get("/admin/tenants", headers={**_bad_key(), **guesser}).status_code
                for _ in range(6)
            ]
            guesser_with_a_key = client.get("/admin/tenants", headers={**AUTH, **guesser})
            others = client.get("/admin/tenants", headers=AUTH)  # the proxy itself
    finally:
        assert stop_server(server) == 0

    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    assert guesser_with_a_key.status_code == 429
    assert others.status_code == 200
