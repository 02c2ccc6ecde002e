"""The open-loop generator (bench/openloop.py): its schedule and percentile maths, and
streams against a tiny HTTP server."""

from __future__ import annotations

import pytest

from bench.openloop import Outcome, http_request, percentile, schedule, windows


def test_a_schedule_is_evenly_spaced_at_its_rate_from_its_start() -> None:
    due = schedule(4, 2.0, start=1.0)
    assert due == [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75]
    assert schedule(30, 10)[-1] == pytest.approx(299 / 30)
    assert len(schedule(1500, 11)) == 16_500
    assert schedule(0, 5) == [] and schedule(10, 0) == []


def test_the_nearest_rank_percentile_is_a_value_that_was_measured() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile(values, 100) == 100.0
    assert percentile([5.0, 1.0, 3.0], 99) == 5.0  # unsorted input, few values: the worst
    assert percentile([], 99) is None
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, 0)


def test_windows_split_by_due_time_and_keep_the_empty_ones() -> None:
    outcomes = [Outcome(due) for due in (0.1, 0.9, 1.2, 3.5, 4.0)]
    got = [(start, [o.due for o in bucket]) for start, bucket in windows(outcomes, 0, 4, 1)]
    assert got == [(0, [0.1, 0.9]), (1, [1.2]), (2, []), (3, [3.5])]  # 4.0 is outside


def test_a_request_carries_its_key_and_a_body_length() -> None:
    request = http_request("POST", "/v2/x", host="h:1", authorization="Bearer k", body=b"{}")
    head, body = request.split(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /v2/x HTTP/1.1",
        b"Host: h:1",
        b"Authorization: Bearer k",
        b"Content-Type: application/json",
        b"Content-Length: 2",
    ]
    assert body == b"{}"


def test_every_stream_gets_its_own_requests_at_its_own_rate() -> None:
    """Two streams against a tiny HTTP server: each request carries its stream's path."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from bench.openloop import Stream, run

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append(self.path)
            status = 200 if self.path == "/b" else 429
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        streams = [
            Stream(name, http_request("GET", f"/{name}", host="h"), rate, 0.5, connections=2)
            for name, rate in (("b", 20), ("c", 40))
        ]
        result = run("127.0.0.1", port, streams)
        outcomes = result.outcomes
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(seen) == ["/b"] * 10 + ["/c"] * 20
    assert [o.status for o in outcomes["b"]] == [200] * 10
    assert [(o.status, o.retry_after) for o in outcomes["c"]] == [(429, True)] * 20
    assert all(o.latency is not None and o.latency < 3 for o in outcomes["c"])
    # kept alive: each stream opened at most its two connections, however many requests
    assert 1 <= result.extra["b connections"] <= 2
    assert 1 <= result.extra["c connections"] <= 2
