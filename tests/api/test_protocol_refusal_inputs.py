"""Odd request lines and headers from a caller the refusal memo refuses (issue 15): whatever
the protocol answers itself on a connection that knows the caller, the app answers the same
request alike on a fresh connection (same status, same body, same headers but for the
numbers that count down and a new request id), and the connection stays in step.

The server runs in a thread of its own, so that hypothesis drives plain sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.server import Server
from modelgate.settings import Settings
from tests.api.conftest import FIXTURE_MODELS

ROW = orjson.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
)


class Running:
    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop, keys: dict[str, str]):
        self.server, self.loop, self.keys = server, loop, keys

    @property
    def port(self) -> int:
        return self.server.http_port


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    settings_ = Settings(
        data_dir=Path(tmp_path_factory.mktemp("refusal-inputs")),
        http_port=0,
        grpc_port=0,
        log_level="warning",
        model_repository=FIXTURE_MODELS,
        auth="required",
        refusal_burst=0,  # no holds: every refusal answered at once
        abuse_slow_after=1_000_000,  # the 400s of odd requests neither slow nor block
        abuse_block_after=1_000_000,
        access_log=False,
    )
    server = Server(settings_)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),))
    thread.start()
    ready = asyncio.run_coroutine_threadsafe(server.started.wait(), loop)
    ready.result(60)

    async def keys() -> dict[str, str]:
        assert server.components is not None and server.components.state is not None
        store = server.components.state.identity
        await store.create_plan(Plan(name="refusing", requests_per_second=0.001, burst=1))
        now = datetime.now(UTC)
        made = {}
        for name in ("flood", "other"):
            await store.create_tenant(Tenant(f"ten_{name}", name, "refusing", now))
            issued = issue_key()
            await store.create_key(
                ApiKeyRecord(
                    f"key_{name}",
                    f"ten_{name}",
                    name,
                    issued.prefix,
                    issued.key_hash,
                    ("infer",),
                    now,
                )
            )
            made[name] = issued.secret
        return made

    made = asyncio.run_coroutine_threadsafe(keys(), loop).result(30)
    for secret in made.values():  # each plan's one request: every later one is refused
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=20) as sock:
            sock.sendall(plain(secret))
            assert read_answer(sock, bytearray())[0] == 200
    try:
        yield Running(server, loop, made)
    finally:
        loop.call_soon_threadsafe(server.request_stop)
        thread.join(30)
        loop.close()


def _head(method: str, target: str, version: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "host: x", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def plain(secret: str) -> bytes:
    return (
        _head(
            "POST",
            "/v2/models/doubler/infer",
            "1.1",
            [("authorization", f"Bearer {secret}"), ("content-length", str(len(ROW)))],
        )
        + ROW
    )


def read_answer(
    sock: socket.socket, pending: bytearray, *, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before an answer")
        pending += chunk
    end = pending.index(b"\r\n\r\n") + 4
    lines = pending[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    length = 0 if head_only else int(headers.get("content-length", "0"))
    while len(pending) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside an answer")
        pending += chunk
    body = bytes(pending[end : end + length])
    del pending[: end + length]
    return int(lines[0].split()[1]), headers, body


def _comparable(headers: dict[str, str]) -> dict[str, str]:
    """The headers but for what differs between two answers to the same request."""
    out = {k: v for k, v in headers.items() if k not in ("x-request-id",)}
    for name in ("retry-after", "x-ratelimit-reset"):
        if name in out:
            out[name] = "N"
    return out


_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)
_PATHS = st.sampled_from(
    [
        "/v2/models/doubler/infer",
        "/v2/models/doubler/versions/1/infer",
        "/v2/models/doubler/infer?x=1",
        "/v2/models/dou%62ler/infer",
        "/v2/models//infer",
        "/v2/models/doubler/infer/more",
        "/v2/models/nothere/infer",
        "/v1/embeddings",
        "/v2/models/doubler",
    ]
) | st.builds(
    "/v2/models/{}/infer".format,
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~:@!$&'()*+,;=", min_size=1),
)
_HEADERS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "content-type",
                "x-request-timeout-ms",
                "inference-header-content-length",
                "x-request-id",
                "connection",
                "expect",
                "traceparent",
                "x-forwarded-for",
                "accept",
            ]
        )
        | _TOKEN,
        st.sampled_from(["application/json", "0", "12", "close", "keep-alive", "abc", ""]) | _VALUE,
    ),
    max_size=5,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "HEAD"]),
    path=_PATHS,
    version=st.sampled_from(["1.1", "1.1", "1.0"]),
    headers=_HEADERS,
    credential=st.sampled_from(["same", "same", "same", "other", "x-api-key", "none"]),
    body=st.sampled_from([ROW, b"", b"{not json", b"x" * 100]),
)
def test_a_refused_callers_odd_request_is_answered_as_the_app_answers_it(
    running: Running,
    method: str,
    path: str,
    version: str,
    headers: list[tuple[str, str]],
    credential: str,
    body: bytes,
) -> None:
    flood, other = running.keys["flood"], running.keys["other"]
    sent: list[tuple[str, str]] = list(headers)
    if credential == "same":
        sent.append(("authorization", f"Bearer {flood}"))
    elif credential == "other":
        sent.append(("authorization", f"Bearer {other}"))
    elif credential == "x-api-key":
        sent.append(("x-api-key", flood))
    sent = [(n, v) for n, v in sent if n not in ("content-length", "transfer-encoding", "host")]
    sent.append(("content-length", str(len(body))))
    example = _head(method, path, version, sent) + body
    answers: list[Any] = []
    for known in (True, False):
        with socket.create_connection(("127.0.0.1", running.port), timeout=20) as sock:
            pending = bytearray()
            if known:  # the app authenticates and refuses the flooder on this connection first
                sock.sendall(plain(flood))
                assert read_answer(sock, pending)[0] == 429
            sock.sendall(example)
            try:
                answer = read_answer(sock, pending, head_only=method == "HEAD")
            except ConnectionError:
                answer = None  # the server closed without an answer (uvicorn's rule)
            answers.append(answer)
            if answer is not None and answer[1].get("connection") != "close":
                sock.sendall(plain(flood))  # still in step: the next request is answered
                assert read_answer(sock, pending)[0] == 429
    early, by_app = answers
    if early is None or by_app is None:
        assert early is by_app is None
        return
    assert early[0] == by_app[0]
    assert _comparable(early[1]) == _comparable(by_app[1])
    assert early[2] == by_app[2]
