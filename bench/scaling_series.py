"""Record the metric series the chart's KEDA ScaledObjects read, from real modelgate processes
under a compressed day of load, for tests/deploy/test_keda_scaling.py to replay.

``python -m bench.scaling_series --models build/models --out
tests/deploy/fixtures/scaling_series.json`` (about five minutes).

What runs: a ``modelgate serve --role gateway`` with a static node list naming one
``modelgate serve --role node`` on the demo models (access control on: the load carries the
gateway's bootstrap admin key, the gateway calls the node with ``MODELGATE_NODE_KEY``), and
all-MiniLM-L6-v2 requests (one sentence each) over REST to the gateway. The model is the
demo's slow one on purpose: with credit-risk (tens of microseconds a batch) the gateway in
front saturates first and the node's queue and latency never move.

First one node's capacity is measured with wrk (32 requests always open, 8 s), and the node
is stopped again once the gateway holds nothing. Then the day, offered open-loop by
:mod:`bench.openloop` (requests leave when due whatever the servers do, at most
``CONNECTIONS`` open, so a backlog forms at the servers as under many independent
clients), in units of that capacity so that it means the same on a faster or slower
machine: night, a dawn of light traffic, a morning ramp, a midday peak above one node's
capacity, a spike on top of it, an evening tail, night again (:func:`day_rates`, seeded).
The node is started only when the first request of the morning is due, as KEDA starts a
pool at zero: the requests that come before it serves wait at the gateway
(``modelgate_cold_start_waiting_requests``), which is what the chart's queue query reads
while a pool has no node.

Both servers' ``/metrics`` are scraped every second, and each scrape keeps what the chart's
queries read: the node's ``modelgate_inflight_requests``, the gateway's
``modelgate_inflight_requests`` and ``modelgate_cold_start_waiting_requests``, and both
``modelgate_inference_request_duration_seconds`` histograms (bucket counts summed over
their labels, as ``sum by (le)`` does, kept as each second's increments, so that the
replay computes ``rate(...[2m])`` and ``histogram_quantile`` itself with the window and
quantile the rendered chart names). ``modelgate_gpu_utilization_percent`` is looked for
at every scrape and recorded as absent (there is no GPU here; the run fails if one
appears): the GPU trigger has no recorded series.

Time: one recorded second stands for one KEDA poll (the chart's ``pollingInterval``, 15 s),
so the run stands for a bit over an hour of the autoscaler's time, and the rules' windows
(``cooldownPeriod``, the HPA's 300 s stabilisation, the queries' 2-minute rate) are
replayed in polls: 20, 20 and 8 recorded seconds. The compression is of the load's shape
only: a node's queue and latency follow its offered rate within a second or two.

Node count: one node is recorded (two cores cannot hold eight nodes, a gateway and the load
generator and still say what eight nodes do). The gateway spreads a model's requests over
its nodes, so each of N nodes sees 1/N of the offered rate; the replay reads N nodes as N
recorded polls of the morning (the dawn, the ramp and the peak: states reached under a
load that had only grown, past the cold start) whose offered rates were nearest that share,
their requests in flight summed and their histograms pooled, as the queries sum the pods.
That is faithful to what one node does at a given load and to each node being read at its
own moment (a gauge of requests in flight often reads 0 at light load, and N nodes rarely
all do); it is not faithful to transients that depend on the node count (one node's
backlog draining through the evening, which N nodes would not have built). The cold start
is read as recorded while the pool's one node starts; with no node, the queue is what
waits at the gateways (recorded for the morning; at other moments the requests due since
the pool went to zero, within the gateways' cold-start wait).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench import loadgen, openloop, workloads
from bench.procs import ROOT, Server, free_port, http_ready, stop_all
from modelgate.observability.metrics import LATENCY_BUCKETS

__all__ = ["DAY_S", "LE", "Scrape", "day_rates", "due_times", "main", "parse_metrics", "record"]

#: recorded seconds of the day (one scrape each)
DAY_S = 275
#: KEDA's seconds per recorded second: one scrape stands for one poll (pollingInterval 15)
POLL_S = 15
#: the day's phases (recorded seconds; rates in units of one node's capacity): night, a
#: dawn of light traffic, a morning ramp, a midday peak above one node's capacity, a spike
#: on top of the peak, an evening tail, night (long enough for a cooldown)
DAWN, RAMP, PEAK_AT, SPIKE_AT, SPIKE_END, TAIL, NIGHT = 15, 75, 135, 165, 177, 177, 230
PEAK = 1.5
SPIKE_EXTRA = 1.5
#: the buckets of modelgate_inference_request_duration_seconds (the last is +Inf)
LE = (*LATENCY_BUCKETS, math.inf)
#: the model: slow enough that one node, not the gateway in front of it, is what saturates
MODEL = workloads.MINILM
BODY = orjson.dumps(
    {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": [workloads.SENTENCES[0]]}
        ]
    }
)
#: what the gateway sends its node, which the node accepts as its admin key
NODE_KEY = "scaling-node-key-0123456789abcdef"
LATENCY = "modelgate_inference_request_duration_seconds"
GPU = "modelgate_gpu_utilization_percent"
#: requests the load generator may have open: the backlog forms at the servers, not here
CONNECTIONS = 256
#: the gateway holds a request this long for a node to start (the node starts in seconds)
COLD_START_WAIT_S = 30


def day_rates(capacity: float, seed: int = 13) -> list[float]:
    """Requests per second to offer in each recorded second, in units of ``capacity``: night;
    dawn, 0.05 rising to 0.3; a ramp to ``PEAK`` (sin²); the peak; ``SPIKE_EXTRA`` on top of
    it; a tail back to nothing (cos²); night. Each second ±15% (seeded)."""
    rng = random.Random(seed)
    rates = []
    for second in range(DAY_S):
        if second < DAWN or second >= NIGHT:
            share = 0.0
        elif second < RAMP:
            share = 0.05 + 0.25 * (second - DAWN) / (RAMP - DAWN)
        elif second < PEAK_AT:
            share = (
                0.3 + (PEAK - 0.3) * math.sin(math.pi / 2 * (second - RAMP) / (PEAK_AT - RAMP)) ** 2
            )
        elif second < TAIL:
            share = PEAK + (SPIKE_EXTRA if SPIKE_AT <= second < SPIKE_END else 0.0)
        else:
            share = PEAK * math.cos(math.pi / 2 * (second - TAIL) / (NIGHT - TAIL)) ** 2
        rates.append(share * capacity * rng.uniform(0.85, 1.15) if share else 0.0)
    return rates


def due_times(rates: list[float]) -> list[float]:
    """Due times (s from the start) offering ``rates[i]`` per second in second ``i``: the
    n-th request is due when the rates, integrated from the start, reach n (so fractions
    carry over to the next second)."""
    dues = []
    total = 0.0
    for second, rate in enumerate(rates):
        if rate <= 0:
            continue
        sent = math.floor(total)
        total += rate
        for k in range(sent + 1, math.floor(total) + 1):
            dues.append(second + (k - (total - rate)) / rate)
    return dues


@dataclass
class Scrape:
    """What one server's /metrics said: None for a server that did not answer."""

    inflight: float = 0.0
    waiting: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(LE))
    gpu: list[float] = field(default_factory=list)


def parse_metrics(text: str) -> Scrape:
    """The values the chart's queries read, from one exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelgate_inflight_requests":
                scrape.inflight += sample.value
            elif sample.name == "modelgate_cold_start_waiting_requests":
                scrape.waiting += sample.value
            elif sample.name == f"{LATENCY}_bucket":
                le = float(sample.labels["le"])
                scrape.buckets[LE.index(le)] += sample.value
            elif sample.name == GPU:
                scrape.gpu.append(sample.value)
    return scrape


def scrape(port: int) -> Scrape | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return parse_metrics(answer.read().decode())
    except OSError:
        return None


def measure_capacity(port: int, work: Path, seconds: float = 8.0) -> float:
    """Requests answered per second with 32 always open (wrk, a closed loop: the node's
    batches full, no backlog left behind)."""
    script = loadgen.lua_script(work / "capacity.lua", [BODY])
    load = loadgen.wrk(
        f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer", script, 32, seconds, cpus=None
    )
    if load.errors:
        raise RuntimeError(f"{load.errors} of {load.requests} requests failed measuring capacity")
    return load.rps


def drained(port: int, timeout: float = 60) -> None:
    """Until the gateway holds no request (none running, none waiting for a node)."""
    deadline = time.monotonic() + timeout
    while True:
        at = scrape(port)
        if at is not None and at.inflight == 0 and at.waiting == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway still holds requests after {timeout:.0f} s: {at}")
        time.sleep(0.5)


def record(models: Path, work: Path) -> dict[str, object]:
    node_http, node_grpc = free_port(), free_port()
    gateway_http, gateway_grpc = free_port(), free_port()
    node = Server(
        "node",
        [
            sys.executable, "-m", "modelgate", "serve", "--role", "node", "--node-id", "n0",
            "--model-repository", str(models), "--data-dir", str(work / "node-data"),
            "--http-port", str(node_http), "--grpc-port", str(node_grpc),
        ],
        work,
        env={"MODELGATE_ADMIN_KEY": NODE_KEY},
    )  # fmt: skip
    gateway = Server(
        "gateway",
        [
            sys.executable, "-m", "modelgate", "serve", "--role", "gateway",
            "--nodes", f"127.0.0.1:{node_grpc}", "--data-dir", str(work / "gateway-data"),
            "--http-port", str(gateway_http), "--grpc-port", str(gateway_grpc),
        ],
        work,
        env={
            "MODELGATE_ADMIN_KEY": workloads.BENCH_KEY,
            "MODELGATE_NODE_KEY": NODE_KEY,
            "MODELGATE_NODE_KEY_NODES": "*",
            "MODELGATE_COLD_START_WAIT_SECONDS": str(COLD_START_WAIT_S),
        },
    )  # fmt: skip
    node_ready = http_ready(f"http://127.0.0.1:{node_http}/v2/health/ready")
    request = openloop.http_request(
        "POST",
        f"/v2/models/{MODEL}/infer",
        host=f"127.0.0.1:{gateway_http}",
        authorization=workloads.AUTHORIZATION,
        body=BODY,
    )
    try:
        gateway.start(http_ready(f"http://127.0.0.1:{gateway_http}/v2/health/live"))
        node.start(node_ready, timeout=180)
        wait_served(gateway, gateway_http, request)
        openloop.run("127.0.0.1", gateway_http, [openloop.Stream("warm", request, 50, 3)])
        capacity = measure_capacity(gateway_http, work)
        print(f"one node answers {capacity:.0f} requests/s through the gateway", flush=True)
        drained(gateway_http)
        node.stop()
        while scrape(node_http) is not None:
            time.sleep(0.2)
        time.sleep(3)  # the gateway's directory (refreshed each second) forgets the node
        drained(gateway_http)
        rates = day_rates(capacity)
        dues = tuple(due_times(rates))
        rows = run_day(gateway_http, node_http, node, node_ready, request, dues)
    finally:
        stop_all()
    return {"capacity_rps": round(capacity, 1), "rates": rates, "rows": rows}


def wait_served(gateway: Server, port: int, request: bytes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        run = openloop.run("127.0.0.1", port, [openloop.Stream("probe", request, 1, 1)])
        outcome = run.outcomes["probe"][0]
        if outcome.status == 200:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the gateway did not serve {MODEL} in {timeout:.0f} s (last: "
                f"{outcome.status or outcome.error}):\n{gateway.log_tail()}"
            )
        time.sleep(0.5)


def run_day(
    gateway_http: int,
    node_http: int,
    node: Server,
    node_ready: Callable[[], bool],
    request: bytes,
    dues: tuple[float, ...],
) -> list[list[object]]:
    """Offer ``dues`` to the gateway, start the node when the first is due, and scrape both
    servers each second; one row per second (see :data:`COLUMNS`)."""
    started, node_up = threading.Event(), threading.Event()
    origin: list[float] = []
    offered = [0] * DAY_S
    for due in dues:
        offered[min(int(due), DAY_S - 1)] += 1

    def mark() -> None:
        origin.append(time.monotonic())
        started.set()

    def start_node() -> None:
        def starting() -> None:
            node.start(node_ready, 180)
            node_up.set()

        threading.Thread(target=starting, daemon=True).start()

    rows: list[list[object]] = []
    previous = {"node": [0.0] * len(LE), "gateway": [0.0] * len(LE)}
    gpu_seen: list[float] = []

    failed: list[BaseException] = []

    def scraper() -> None:
        try:
            scrape_day()
        except BaseException as exc:
            failed.append(exc)
            os.kill(os.getpid(), signal.SIGINT)  # the load stops too: the run is lost

    def scrape_day() -> None:
        started.wait()
        gateway_start = scrape(gateway_http)
        assert gateway_start is not None, "the gateway stopped answering /metrics"
        previous["gateway"] = gateway_start.buckets
        for second in range(1, DAY_S + 1):
            time.sleep(max(0.0, origin[0] + second - time.monotonic()))
            at = round(time.monotonic() - origin[0], 2)
            up = node_up.is_set()
            at_node, at_gateway = scrape(node_http) if up else None, scrape(gateway_http)
            if at_gateway is None or (up and at_node is None):
                raise RuntimeError(f"a server did not answer /metrics in time at {at} s")
            node_buckets = at_node.buckets if at_node is not None else previous["node"]
            rows.append(
                [
                    second,
                    at,
                    offered[second - 1],
                    int(at_node is not None),
                    at_node.inflight if at_node is not None else 0,
                    at_gateway.inflight,
                    at_gateway.waiting,
                    increments(previous["node"], node_buckets),
                    increments(previous["gateway"], at_gateway.buckets),
                ]
            )
            previous["node"], previous["gateway"] = node_buckets, at_gateway.buckets
            if at_node is not None:
                gpu_seen.extend(at_node.gpu)

    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    stream = openloop.Stream(
        "day",
        request,
        rate=1,
        seconds=DAY_S,
        connections=CONNECTIONS,
        timeout=COLD_START_WAIT_S + 5,
        dues=dues,
    )
    openloop.run("127.0.0.1", gateway_http, [stream], events=[(0.0, mark), (dues[0], start_node)])
    thread.join(timeout=DAY_S + 30)
    if failed:
        raise RuntimeError("scraping failed") from failed[0]
    if len(rows) != DAY_S:
        raise RuntimeError(f"{len(rows)} of {DAY_S} seconds scraped")
    if gpu_seen:
        raise RuntimeError(f"the node reported GPU utilisation {gpu_seen[:5]}: record it too")
    return rows


def increments(before: list[float], after: list[float]) -> list[int]:
    """Each bucket's increase (cumulative bucket counts; a node that started anew counts from
    zero)."""
    if any(a < b for a, b in zip(after, before, strict=True)):
        before = [0.0] * len(LE)
    return [round(a - b) for a, b in zip(after, before, strict=True)]


#: a row of the fixture
COLUMNS = [
    "second",
    "scraped_at",
    "offered",
    "node_up",
    "node_inflight",
    "gateway_inflight",
    "gateway_cold_start_waiting",
    "node_latency_bucket_increments",
    "gateway_latency_bucket_increments",
]


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {platform.platform()}"


def commit() -> str:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return done.stdout.strip()


def write(out: Path, recorded: dict[str, object], argv: list[str], took_s: float) -> None:
    """The fixture: a header, then one row per recorded second, one line each."""
    rows = recorded["rows"]
    assert isinstance(rows, list)
    header = {
        "command": "python -m bench.scaling_series " + " ".join(argv),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit(),
        "machine": machine(),
        "took_s": round(took_s),
        "setup": (
            "one modelgate gateway (static node list) and one node on the demo models, "
            f"{MODEL} (one sentence each) over REST to the gateway with the bootstrap admin key, "
            f"bench.openloop with at most {CONNECTIONS} requests open; the node started "
            "when the first request was due"
        ),
        "capacity_rps": recorded["capacity_rps"],
        "day": (
            f"x capacity, ±15% per second (seed 13): night to {DAWN} s, dawn 0.05 to 0.3 to "
            f"{RAMP} s, ramp to {PEAK} at {PEAK_AT} s, peak, spike +{SPIKE_EXTRA} from "
            f"{SPIKE_AT} to {SPIKE_END} s, tail to 0 at {NIGHT} s, night to {DAY_S} s"
        ),
        "spike_seconds": [SPIKE_AT, SPIKE_END],
        "seconds_per_row": 1,
        "keda_seconds_per_row": POLL_S,
        "cold_start_wait_s": COLD_START_WAIT_S,
        "le": [str(le) if le != math.inf else "+Inf" for le in LE],
        "gpu_utilization": "absent: no modelgate_gpu_utilization_percent at any scrape",
        "columns": COLUMNS,
    }
    lines = ["{", f'"header": {json.dumps(header)},', '"rows": [']
    lines += [json.dumps(row) + ("," if i < len(rows) - 1 else "") for i, row in enumerate(rows)]
    lines += ["]", "}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling_series", description=__doc__)
    parser.add_argument("--models", type=Path, default=ROOT / "build" / "models")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    if not (args.models / MODEL).is_dir():
        parser.error(f"{args.models} has no {MODEL} (make demo builds it)")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="scaling-series-") as work:
        recorded = record(args.models.resolve(), Path(work))
    write(args.out, recorded, given, time.monotonic() - began)
    rows = recorded["rows"]
    assert isinstance(rows, list)
    print(f"{len(rows)} seconds recorded to {args.out}", flush=True)


if __name__ == "__main__":
    main()
