"""The flood run's pure helpers (bench/flood/): when latency and readiness are normal again
after an overload, which shedding setting the numbers support, the CPU cgroup's quota, and
the Markdown table, the key-cache row's mean of runs."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import socket
import time

from bench.flood.__main__ import markdown
from bench.flood.accept_queue import PERIOD_S, AcceptQueue, listen_queue, sampled
from bench.flood.cpu_split import CpuMarks
from bench.flood.hold import quota_us
from bench.flood.key_cache import _mean
from bench.flood.measure import Row
from bench.flood.new_connections import NewConnections, _one_each
from bench.flood.overload import (
    Variant,
    ok_rate,
    ready_again,
    recovery,
    settled,
    supported,
    sustained,
)
from bench.openloop import Outcome


def _probe(due: float, latency: float, status: int = 200) -> Outcome:
    return Outcome(due, status=status, latency=latency, error="")


def test_latency_is_normal_again_from_the_window_after_the_last_slow_one() -> None:
    # load dropped at 10 s; normal p99 10 ms (bound 20 ms); slow until 12 s, a 503 at 12.5
    probe = [_probe(10 + i / 10, 0.5 if i < 20 else 0.01) for i in range(50)]
    probe[25] = _probe(12.5, 0.001, status=503)
    assert recovery(probe, drop=10, seconds=5, normal=0.010) == 3.0
    assert recovery(probe[:20], drop=10, seconds=2, normal=0.010) is None  # slow to the end


def test_readiness_is_back_from_the_first_of_the_last_run_of_200s() -> None:
    polls = [
        Outcome(d, status=s, error="")
        for d, s in ((9, 503), (10, 503), (11, 200), (12, 503), (13, 200), (14, 200))
    ]
    assert ready_again(polls, drop=10) == 3.0
    assert ready_again([Outcome(11, status=200, error="")], drop=10) == 1.0
    assert ready_again([Outcome(10, status=200, error="")], drop=10) == 0.0
    assert ready_again([Outcome(11, status=503, error="")], drop=10) is None


def test_the_markdown_table_escapes_pipes_and_says_pass_or_miss() -> None:

    row = Row("x", "a | b", "<= 1x", measured="2x", passed=False)
    row.note("figure", "1 | 2")
    lines = markdown([row, Row("y", "c", "t", measured="m", passed=True)]).splitlines()
    assert lines[2] == "| a \\| b | 2x | <= 1x | MISS |"
    assert lines[3] == "| c | m | t | PASS |"
    assert lines[-1] == "| x | figure | 1 \\| 2 |"


def test_the_supported_default_misses_fewest_targets_then_leaves_fewest_unanswered() -> None:
    off = Variant(0, goodput=1.1, unanswered=8000, met=1)
    at_20 = Variant(20, goodput=0.5, unanswered=50, met=2)
    at_50 = Variant(50, goodput=0.9, unanswered=3000, met=2)
    assert supported([off, at_20, at_50]) is at_20
    assert supported([off, Variant(50, goodput=0.85, unanswered=0, met=4)]).target_ms == 50
    assert supported([off]) is off


def test_a_share_of_a_core_keeps_its_ratio_above_the_kernels_minimum_quota() -> None:

    assert quota_us(0.1) == (1000, 10_000)
    assert quota_us(0.25) == (2500, 10_000)
    assert quota_us(0.05) == (1000, 20_000)  # not 1 ms of 10 ms: that would be 0.1
    assert quota_us(1.0) == (10_000, 10_000)


def test_capacity_rounds_go_on_while_the_rate_still_rises() -> None:
    assert not settled([])
    assert not settled([27.0])
    assert not settled([27.0, 120.0])  # still warming up
    assert settled([27.0, 120.0, 115.0])
    assert settled([100.0, 105.0])  # under 10% more: warm
    assert settled([10.0, 20.0, 40.0, 80.0, 160.0, 320.0])  # at most six rounds


def test_capacity_is_the_median_steady_round_not_the_best() -> None:
    assert sustained([287.0, 178.0, 335.0]) == 287.0
    assert sustained([200.0, 100.0]) == 100.0  # the lower middle: a lucky round never sets it
    assert sustained([150.0]) == 150.0
    assert sustained([]) == 0.0


def test_a_warm_up_round_counts_only_successful_answers() -> None:
    # a variant with shedding on answers 503s in its warm-up: wrk counts them in its rate
    assert ok_rate(500.0, 1000, 750) == 125.0
    assert ok_rate(100.0, 200, 0) == 100.0
    assert ok_rate(0.0, 0, 0) == 0.0


def test_the_key_cache_row_takes_the_mean_of_its_runs_and_none_without_a_figure() -> None:
    assert _mean([0.010, 0.014]) == 0.012
    assert _mean([0.010, None]) is None
    assert _mean([0.010, math.inf]) == math.inf  # a run with an unanswered request


def test_the_accept_queue_is_read_from_the_listening_line_of_ss() -> None:
    assert listen_queue("LISTEN 17     2048     127.0.0.1:8000      0.0.0.0:*\n") == (17, 2048)
    assert listen_queue("") is None
    assert listen_queue("ESTAB 0 0 127.0.0.1:8000 127.0.0.1:5000\n") is None


def test_the_accept_queue_summary_gives_the_peak_and_the_time_over_a_quarter() -> None:
    seen = AcceptQueue([(0.25, 0), (0.5, 600), (0.75, 2048), (1.0, 100)], limit=2048)
    assert seen.summary() == (
        "peak 2,048 of 2,048 connections waiting; over a quarter of it for 0.5 s of 1 s"
    )
    assert AcceptQueue().summary() == "not seen (no ss)"


def test_a_listening_port_is_sampled_while_the_block_runs() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)), sampled(port) as seen:
            time.sleep(3 * PERIOD_S)
    if shutil.which("ss") is None:
        assert seen.samples == []
        return
    assert seen.limit == 8
    assert seen.samples and all(waiting == 1 for _, waiting in seen.samples)


def test_the_new_connection_client_opens_one_per_request_and_counts_statuses() -> None:
    accepted = 0

    async def run() -> tuple[int, dict[int, int]]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await _one_each("127.0.0.1", port, b"GET / HTTP/1.1\r\n\r\n", 0.3)

    answers, statuses = asyncio.run(run())
    assert answers > 0 and statuses == {429: answers}
    assert accepted == answers  # every request on a connection of its own
    assert NewConnections(4, {200: 4}, 0.002).per_answer_s == 0.0005
    assert NewConnections(0, {}, 0.0).per_answer_s is None


def test_the_cpu_split_charges_served_answers_their_1x_cost_and_the_rest_to_refusals() -> None:
    marks = CpuMarks(os.getpid(), [0.0, 5.0, 10.0, 13.0, 33.0])
    for _, mark in marks.events():
        mark()
    assert all(cpu > 0 for cpu in marks.seen.values())  # this process's own CPU
    marks.seen = {0.0: 0.98, 5.0: 1.0, 10.0: 1.05, 13.0: 2.0, 33.0: 2.2}
    light = [Outcome(6.0, 200)] * 100  # 0.05 s for 100: 500 µs each
    flood = [Outcome(14.0, 200)] * 200 + [Outcome(14.0, 503)] * 800 + [Outcome(14.0)] * 5
    row = Row("r", "what", "target")
    marks.note(row, (0.0, 5.0), (5.0, 10.0, light), (13.0, 33.0, flood), 0.1, 1234)
    assert row.details == [
        (
            "server CPU (process tree, /proc)",
            "0.5x: 4% of its share used; 1x: 10% of its share used, 500 µs per answer (100 "
            "served); 4x: 10% of its share used, 200 µs per "
            "answer; what the served answers leave at the 1x cost (refusals, new "
            "connections, work for clients that had gone): 50%, 125 µs per refusal; 1,234 "
            "connections opened by the 4x stream",
        )
    ]
    saturated = Row("r", "what", "target")
    marks.seen[0.0] = 0.5  # 0.5 s of CPU in 5 s at 0.5x: the whole share
    marks.note(saturated, (0.0, 5.0), (5.0, 10.0, light), (13.0, 33.0, flood), 0.1, None)
    assert saturated.details[-1][0] == "warning"
    assert "used 100% of its share at 0.5x" in saturated.details[-1][1]
    unmeasured = Row("r", "what", "target")
    marks.seen.pop(33.0)
    marks.note(unmeasured, (0.0, 5.0), (5.0, 10.0, light), (13.0, 33.0, flood), 0.1, None)
    assert unmeasured.details == [("server CPU", "not measured")]
