"""The scaling-series recorder (bench/scaling_series.py): the day it offers, its due times,
what it reads from /metrics, and an open-loop stream on explicit due times."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from bench.openloop import Stream, http_request, run
from bench.scaling_series import (
    DAY_S,
    LE,
    NIGHT,
    PEAK,
    SPIKE_AT,
    SPIKE_END,
    SPIKE_EXTRA,
    day_rates,
    due_times,
    parse_metrics,
)
from modelgate.observability.metrics import PrometheusMetrics


def test_the_day_is_night_light_dawn_a_peak_a_spike_and_night() -> None:
    rates = day_rates(100.0)
    assert len(rates) == DAY_S
    assert rates[:15] == [0.0] * 15 and rates[NIGHT:] == [0.0] * (DAY_S - NIGHT)
    assert all(r <= 0.3 * 1.15 * 100 for r in rates[15:75])  # dawn: light
    peak = rates[135:SPIKE_AT]
    assert min(peak) >= PEAK * 0.85 * 100 and max(peak) <= PEAK * 1.15 * 100
    assert min(rates[SPIKE_AT:SPIKE_END]) >= (PEAK + SPIKE_EXTRA) * 0.85 * 100
    assert day_rates(100.0) == rates  # seeded
    assert day_rates(200.0)[140] == pytest.approx(2 * rates[140])


def test_due_times_offer_each_seconds_rate_carrying_fractions() -> None:
    # the n-th request is due when the rates, integrated from the start, reach n
    dues = due_times([0.0, 4.0, 0.5, 0.5, 2.5])
    assert dues == pytest.approx([1.25, 1.5, 1.75, 2.0, 4.0, 4.4, 4.8])
    assert len(due_times([33.3] * 10)) == 333
    assert due_times([0.0, 0.0]) == []


def test_the_metrics_read_are_those_the_chart_queries() -> None:
    metrics = PrometheusMetrics()
    for seconds, tenant in ((0.003, "a"), (0.3, "b"), (20.0, "b")):
        metrics.latency.labels("m", "1", tenant).observe(seconds)
    Gauge("modelgate_cold_start_waiting_requests", "w", registry=metrics.registry).set(3)
    read = parse_metrics(generate_latest(metrics.registry).decode())
    assert read.waiting == 3 and read.inflight == 0 and read.gpu == []
    # summed over tenants, by bucket, cumulative as Prometheus keeps them
    assert read.buckets[LE.index(0.005)] == 1
    assert read.buckets[LE.index(0.5)] == 2
    assert read.buckets[LE.index(math.inf)] == 3
    gpu = CollectorRegistry()
    Gauge("modelgate_gpu_utilization_percent", "u", ("gpu",), registry=gpu).labels("0").set(40)
    assert parse_metrics(generate_latest(gpu).decode()).gpu == [40.0]


def test_a_stream_on_explicit_due_times_sends_them_when_due() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dues = (0.0, 0.05, 0.1, 0.4)
        stream = Stream("d", http_request("GET", "/", host="h"), 1, 0.5, dues=dues)
        outcomes = run("127.0.0.1", server.server_address[1], [stream]).outcomes["d"]
    finally:
        server.shutdown()
        server.server_close()
    assert [o.due for o in outcomes] == list(dues)  # not the rate's one request
    assert [o.status for o in outcomes] == [200] * 4
