"""Graceful shutdown of a real process: on SIGTERM readiness turns false at once, requests
keep being served for ``MODELGATE_SHUTDOWN_DELAY_SECONDS`` (a balancer's time to notice),
then the process stops accepting, finishes what is in flight and exits 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.conftest import FIXTURE_MODELS
from tests.e2e.conftest import AUTH, start_server, stop_server

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def test_sigterm_turns_readiness_false_at_once_and_serves_through_the_delay(
    tmp_path: Path,
) -> None:
    server = start_server(FIXTURE_MODELS, tmp_path, env={"MODELGATE_SHUTDOWN_DELAY_SECONDS": "2"})
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as client:
            assert client.get("/v2/health/ready").status_code == 200
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            while client.get("/v2/health/ready").status_code == 200:
                assert time.monotonic() - signalled < 1.0, "still ready 1 s after SIGTERM"
                time.sleep(0.02)
            not_ready_after = time.monotonic() - signalled
            codes = []
            while time.monotonic() - signalled < 1.5:  # inside the delay: still served
                codes.append(client.post("/v2/models/doubler/infer", json=ROW).status_code)
            assert client.get("/v2/health/live").status_code == 200
        print(f"\nnot ready {not_ready_after * 1000:.0f} ms after SIGTERM; {len(codes)} served")
        assert codes and set(codes) == {200}
        assert server.process.wait(timeout=20) == 0
    finally:
        stop_server(server)
