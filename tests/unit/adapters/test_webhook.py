"""The webhook sender against a real HTTP server on loopback: signed bodies, retries with
one delivery id, final 4xx, timeouts, and close waiting for what is in flight."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from modelgate.notify.webhook import WebhookSender, signature


class Receiver:
    def __init__(self, statuses: list[int], delay_s: float = 0.0) -> None:
        self.statuses = statuses
        self.delay_s = delay_s
        self.calls: list[tuple[dict[str, str], bytes]] = []


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver([])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
            if state.delay_s:
                threading.Event().wait(state.delay_s)
            status = state.statuses.pop(0) if state.statuses else 204
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


async def test_a_delivery_is_signed_and_the_signature_checks(
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver
    sender = WebhookSender(url, secret="s3cret", backoff_s=0.01)
    assert await sender.deliver("quota.threshold", {"tenant_id": "t1", "threshold": 0.8})
    await sender.close()
    headers, body = state.calls[0]
    assert orjson.loads(body) == {"tenant_id": "t1", "threshold": 0.8}
    assert headers["x-modelgate-event"] == "quota.threshold"
    stamp, mac = headers["x-modelgate-signature"].split(",")
    timestamp = int(stamp.removeprefix("t="))
    expected = hmac.new(b"s3cret", f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert mac == f"v1={expected}"
    assert signature("s3cret", timestamp, body) == headers["x-modelgate-signature"]


async def test_5xx_and_429_are_retried_with_one_delivery_id(
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver
    state.statuses = [503, 429, 200]
    sender = WebhookSender(url, backoff_s=0.01, attempts=4)
    assert await sender.deliver("e", {"n": 1})
    await sender.close()
    assert len(state.calls) == 3
    assert len({headers["x-modelgate-delivery"] for headers, _ in state.calls}) == 1


async def test_other_4xx_is_final_and_attempts_are_bounded(
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver
    state.statuses = [400]
    sender = WebhookSender(url, backoff_s=0.01)
    assert not await sender.deliver("e", {})
    state.statuses = [500] * 10
    assert not await sender.deliver("e", {})
    await sender.close()
    assert len(state.calls) == 1 + 4


async def test_a_slow_receiver_times_out(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.delay_s = 1.0
    sender = WebhookSender(url, timeout_s=0.1, attempts=1)
    assert not await sender.deliver("e", {})
    await sender.close()


async def test_close_waits_for_background_deliveries(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    sender = WebhookSender(url, backoff_s=0.01)
    for n in range(3):
        sender.send("e", {"n": n})
    await sender.close()
    assert sorted(orjson.loads(body)["n"] for _, body in state.calls) == [0, 1, 2]
