"""The benchmarks. Everything compared in one benchmark runs in the same invocation, in
alternating rounds (A B, B A, A B, ...), and is reported as the median of its rounds."""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from bench import loadgen, procs, raw, tenant, workloads
from bench.loadgen import Load
from bench.procs import Server, free_port, http_ready, pinned, run_bounded
from bench.sysinfo import (
    busy_seconds,
    cpu_seconds,
    established_per_process,
    own_cpu,
    tree_cpu,
    worker_pids,
)

__all__ = ["SUITES", "Check", "Ctx", "Result"]

T = TypeVar("T")

SERVER_CPU = "0"  # servers pinned here ...
LOAD_CPU = "1"  # ... load generators here, where pinning makes the comparison fairer


@dataclass
class Ctx:
    models: Path
    duration: float
    rounds: int
    work: Path
    console: Console
    #: seconds this invocation may still spend waiting for a quiet machine (shared, mutable)
    quiet_budget: list[float] = field(default_factory=lambda: [60.0])
    #: the key modelgate's requests carry: "admin" (bootstrap) or "tenant" (bench.tenant)
    auth: str = "admin"
    #: with a URL, every modelgate server keeps its limits, quotas and strikes in this Redis
    #: under ``redis_prefix`` (removed by ``python -m bench`` at the end)
    redis_url: str | None = None
    redis_prefix: str | None = None

    @property
    def short(self) -> float:
        """Seconds of a concurrency-1 round."""
        return max(3.0, self.duration * 0.4)

    def once(self) -> Ctx:
        """The same context with a single round."""
        return dataclasses.replace(self, rounds=1)

    def log(self, text: str) -> None:
        self.console.print(f"  [dim]{text}[/]")


@dataclass
class Check:
    what: str
    measured: str
    target: str
    passed: bool | None  # None: informational


@dataclass
class Result:
    name: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


# -- helpers -----------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.0f} µs" if value < 1 else f"{value:.2f} ms"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _rounds_text(values: list[float]) -> str:
    return " / ".join(_n(v) for v in values)


def _ours() -> float:
    """CPU seconds of everything this benchmark runs: itself, its reaped children (the load
    generators) and every server it started that is still running."""
    return own_cpu() + loadgen.children_cpu() + sum(tree_cpu(s.pid) for s in procs.live())


def wait_quiet(ctx: Ctx, limit: float = 20.0, threshold: float = 0.25) -> float:
    """Wait until other processes use under ``threshold`` cores: at most ``limit`` s here and
    ``ctx.quiet_budget`` s over the whole invocation. Returns the cores they used last."""
    deadline = time.monotonic() + min(limit, ctx.quiet_budget[0])
    while True:
        busy, mine, start = busy_seconds(), _ours(), time.monotonic()
        time.sleep(0.5)
        others = (busy_seconds() - busy - (_ours() - mine)) / (time.monotonic() - start)
        if others < threshold:
            return others
        if time.monotonic() + 2.0 > deadline:
            ctx.log(f"machine busy ({others:.2f} cores used by others); measuring anyway")
            return others
        ctx.log(f"waiting for a quieter machine ({others:.2f} cores used by others)")
        time.sleep(2.0)
        ctx.quiet_budget[0] = max(0.0, ctx.quiet_budget[0] - 2.5)


def alternate(
    ctx: Ctx, targets: list[tuple[str, Callable[[], T]]], describe: Callable[[T], str]
) -> dict[str, list[T]]:
    """``ctx.rounds`` rounds over ``targets``, the order reversed every other round.

    Before each run the machine must be quiet (see :func:`wait_quiet`); during it, the CPU
    that other processes took (not the servers, the load generator or this process) is
    recorded as ``background`` cores on the outcome."""
    results: dict[str, list[T]] = {name: [] for name, _ in targets}
    for index in range(ctx.rounds):
        order = targets if index % 2 == 0 else list(reversed(targets))
        for name, run in order:
            wait_quiet(ctx)
            busy, mine, start = busy_seconds(), _ours(), time.monotonic()
            outcome = run()
            elapsed = time.monotonic() - start
            spent = busy_seconds() - busy - (_ours() - mine)
            background = max(0.0, spent / elapsed)
            if isinstance(outcome, Load):
                outcome.extra["background"] = background
            elif isinstance(outcome, raw.Rate):
                outcome.background = background
            results[name].append(outcome)
            ctx.log(
                f"round {index + 1}  {name}: {describe(outcome)}  (others {background:.2f} cores)"
            )
    return results


def _describe(load: Load) -> str:
    text = f"{load.rps:,.0f} req/s"
    if load.p50_ms is not None:
        text += f", p50 {_ms(load.p50_ms)}, p99 {_ms(load.p99_ms)}"
    elif load.mean_ms is not None:
        text += f", mean {_ms(load.mean_ms)}"
    if "server_us_per_req" in load.extra:
        text += f", server CPU {load.extra['server_us_per_req']:.0f} µs/req"
    return text


def _checked(load: Load, what: str) -> Load:
    if load.errors:
        raise RuntimeError(f"{what}: {load.errors} failed requests out of {load.requests}")
    if load.requests == 0:
        raise RuntimeError(f"{what}: no request completed")
    return load


def _with_server_cpu(server: Server, run: Callable[[], Load]) -> Load:
    """Run a load and add the server's CPU per request (whole process tree)."""
    before = tree_cpu(server.pid)
    pauses = len(_gc_pauses(server))
    load = run()
    spent = tree_cpu(server.pid) - before
    load.extra["server_cpu_s"] = spent
    load.extra["server_us_per_req"] = spent / max(load.requests, 1) * 1e6
    load.extra["server_cores"] = spent / max(load.seconds, 1e-9)
    if server.gc_file is not None:
        time.sleep(0.6)  # the probe writes twice a second
        during = _gc_pauses(server)[pauses:]
        full = [s for g, s in during if g == 2]
        load.extra["gc_share"] = sum(s for _, s in during) / max(load.seconds, 1e-9)
        load.extra["gc2_count"] = len(full)
        load.extra["gc2_max_ms"] = max(full, default=0.0) * 1e3
    return load


def _gc_pauses(server: Server) -> list[tuple[int, float]]:
    if server.gc_file is None or not server.gc_file.exists():
        return []
    return [tuple(json.loads(line)) for line in server.gc_file.read_text().splitlines() if line]


def authorization(server: Server) -> str:
    """The Authorization header of requests to ``server`` (bootstrap or tenant key)."""
    return server.authorization or workloads.AUTHORIZATION


def _post(url: str, body: bytes, auth: str = workloads.AUTHORIZATION) -> Any:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"content-type": "application/json", "authorization": auth},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get(url: str) -> Any:
    request = urllib.request.Request(url, headers={"authorization": workloads.AUTHORIZATION})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _stats(port: int, model: str) -> dict[str, int]:
    """The model's counters once the server is idle (a load generator stops with requests in
    flight; they finish after it exits and must not count in the next measurement)."""
    totals: dict[str, int] = {}
    deadline = time.monotonic() + 10
    while True:
        doc = _get(f"http://127.0.0.1:{port}/v2/models/{model}/stats")
        last, totals = totals, {"inferences": 0, "executions": 0, "queue_ns": 0, "compute_ns": 0}
        for entry in doc["model_stats"]:
            totals["inferences"] += entry["inference_count"]
            totals["executions"] += entry["execution_count"]
            totals["queue_ns"] += entry["inference_stats"]["queue"]["ns"]
            totals["compute_ns"] += entry["inference_stats"]["compute_infer"]["ns"]
        if totals == last or time.monotonic() > deadline:
            return totals
        time.sleep(0.3)


def start_modelgate(
    ctx: Ctx,
    tag: str,
    cpus: str | None,
    workers: int = 1,
    *,
    probe: bool = False,
    freeze: bool = False,
) -> Server:
    """modelgate on free ports; ``probe`` runs it under :mod:`bench.gc_probe` (GC pauses
    recorded), ``freeze`` also calls ``gc.freeze()`` once it is ready. With ``ctx.auth``
    "tenant", a tenant key is created through its admin API (``server.authorization``);
    with ``ctx.redis_url``, it keeps limits, quotas and strikes in Redis."""
    http, grpc = free_port(), free_port()
    entry = (
        ["-m", "bench.gc_probe", *(["--freeze"] if freeze else [])]
        if probe or freeze
        else ["-m", "modelgate"]
    )
    argv = pinned(
        cpus,
        [
            sys.executable,
            *entry,
            "serve",
            "--model-repository",
            str(ctx.models),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--workers",
            str(workers),
            "--data-dir",
            str(ctx.work / f"{tag}-data"),
        ],
    )
    env = {"MODELGATE_ADMIN_KEY": workloads.BENCH_KEY}
    if ctx.redis_url is not None and ctx.redis_prefix is not None:
        env |= {
            "MODELGATE_REDIS_URL": ctx.redis_url,
            "MODELGATE_REDIS_KEY_PREFIX": ctx.redis_prefix,
        }
    if probe or freeze:
        gc_file = ctx.work / f"{tag}.gc"
        env["BENCH_GC_FILE"] = str(gc_file)
    server = Server(tag, argv, ctx.work, env=env)
    if probe or freeze:
        server.gc_file = gc_file
    server.http_port, server.grpc_port = http, grpc
    ready = http_ready(f"http://127.0.0.1:{http}/v2/health/ready")
    server.start(
        lambda: server.log_text().count("modelgate ready") >= workers and ready(), timeout=180
    )
    if freeze:
        deadline = time.monotonic() + 30
        while "gc_probe: froze" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    if ctx.auth == "tenant":
        secret = tenant.create_key_over_http(f"http://127.0.0.1:{http}")
        server.authorization = f"Bearer {secret}"
    return server


def _uvicorn_argv(app: str, port: int) -> list[str]:
    """uvicorn as modelgate runs it: httptools, uvloop, one worker, no access log, no
    server or date header."""
    return [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--http", "httptools", "--loop", "uvloop", "--workers", "1", "--no-access-log",
        "--no-server-header", "--no-date-header", "--log-level", "warning",
    ]  # fmt: skip


def start_fastapi(ctx: Ctx, files: workloads.ModelFiles, cpus: str | None) -> Server:
    http = free_port()
    argv = pinned(
        cpus,
        _uvicorn_argv("bench.baseline_fastapi:app", http),
    )
    server = Server(
        "baseline-fastapi",
        argv,
        ctx.work,
        env={"BENCH_ONNX_MODEL": str(files.onnx), "BENCH_MODEL_VERSION": str(files.version)},
    )
    server.http_port = http
    return server.start(http_ready(f"http://127.0.0.1:{http}/v2/health/ready"))


def start_grpc_baseline(
    ctx: Ctx, files: workloads.ModelFiles, cpus: str | None, use_uvloop: bool = False
) -> Server:
    port = free_port()
    argv = pinned(
        cpus,
        [
            sys.executable,
            "-m",
            "bench.baseline_grpc",
            "--port",
            str(port),
            "--model",
            str(files.onnx),
            "--version",
            str(files.version),
        ],
    )
    if use_uvloop:
        argv.append("--uvloop")
    server = Server(f"baseline-grpc{'-uvloop' if use_uvloop else ''}", argv, ctx.work)
    server.grpc_port = port
    return server.start(lambda: "baseline gRPC ready" in server.log_text())


def _same_credit_answer(a: Any, b: Any) -> None:
    def probabilities(doc: Any) -> list[float]:
        return next(o["data"] for o in doc["outputs"] if o["name"] == "probabilities")

    pa, pb = probabilities(a), probabilities(b)
    if len(pa) != len(pb) or any(abs(x - y) > 1e-5 for x, y in zip(pa, pb, strict=True)):
        raise RuntimeError(f"the servers disagree: {pa} vs {pb}")


# -- 1. raw ONNX Runtime -----------------------------------------------------------------
def bench_raw(ctx: Ctx) -> Result:
    credit = workloads.model_files(ctx.models, workloads.CREDIT)
    minilm = workloads.model_files(ctx.models, workloads.MINILM)
    seconds = max(2.0, min(4.0, ctx.duration / 3))
    result = Result(
        "raw",
        "In-process ONNX Runtime (the ceiling)",
        ["workload", "batch", "rows/s", "median call", "p99 call", "others' cores"],
    )
    predictor = raw.minilm_predictor(minilm)
    cases: list[tuple[str, int, Callable[[], Any]]] = [
        (f"credit-risk v{credit.version} (intra 1)", 1, raw.credit_call(credit, 1)),
        (f"credit-risk v{credit.version} (intra 1)", 64, raw.credit_call(credit, 64)),
    ] + [
        (
            f"MiniLM v{minilm.version}, 16-token sentences (intra 2)",
            n,
            raw.minilm_call(predictor, n),
        )
        for n in (1, 8, 32)
    ]
    for label, batch, call in cases:
        key = f"{label} batch {batch}"
        run: Callable[[], raw.Rate] = functools.partial(raw.rate, call, batch, seconds)
        rates = alternate(ctx.once(), [(key, run)], lambda r: f"{r.rows_per_s:,.0f} rows/s")[key]
        rate = rates[0]
        result.rows.append(
            [
                label,
                str(batch),
                _n(rate.rows_per_s),
                _ms(rate.median_call_ms),
                _ms(rate.p99_call_ms),
                _background_text(rates),
            ]
        )
    result.notes.append(
        f"{seconds:.1f} s per case after a warm-up, in the benchmark process, not pinned. "
        "MiniLM includes tokenization, mean pooling and normalisation "
        "(`modelgate.runtimes.text_embedding.TextEmbeddingPredictor.predict`)."
    )
    return result


# -- 2. REST vs a minimal FastAPI app ----------------------------------------------------
def start_floor(ctx: Ctx, cpus: str | None) -> Server:
    http = free_port()
    server = Server(
        "floor-http",
        pinned(cpus, [sys.executable, "-m", "bench.floor_http", "--port", str(http)]),
        ctx.work,
    )
    server.http_port = http
    return server.start(lambda: "floor HTTP ready" in server.log_text())


def start_uvicorn_floor(ctx: Ctx, cpus: str | None) -> Server:
    http = free_port()
    argv = pinned(
        cpus,
        [*_uvicorn_argv("bench.floor_http:app", http), "--lifespan", "off"],
    )
    server = Server("floor-uvicorn", argv, ctx.work)
    server.http_port = http
    return server.start(http_ready(f"http://127.0.0.1:{http}/v2/health/ready"))


def _gc_text(loads: list[Load]) -> str:
    """Median share of time in GC, and the full (gen-2) collections per round with the longest."""
    if not loads or "gc_share" not in loads[0].extra:
        return "-"
    share = _median([x.extra["gc_share"] for x in loads])
    count = _median([x.extra["gc2_count"] for x in loads])
    longest = max(x.extra["gc2_max_ms"] for x in loads)
    return f"{share:.1%}; {count:.0f} full, max {longest:.1f} ms"


def _background_text(outcomes: list[Any]) -> str:
    values = [
        o.extra.get("background", 0.0) if isinstance(o, Load) else getattr(o, "background", 0.0)
        for o in outcomes
    ]
    return f"{_median(values):.2f}"


def bench_rest(ctx: Ctx) -> Result:
    credit = workloads.model_files(ctx.models, workloads.CREDIT)
    result = Result(
        "rest",
        "credit-risk over REST: modelgate vs a minimal FastAPI app",
        [
            "server",
            "conns",
            "wrk on CPU",
            "req/s (median)",
            "p50",
            "p99",
            "server CPU/req",
            "GC: time; full collections/round",
            "others' cores",
            "rounds req/s",
        ],
    )
    script = loadgen.lua_script(ctx.work / "credit.lua", [workloads.credit_json()])
    layers = _inprocess(ctx, "rest")
    servers: dict[str, Server] = {}
    labels = {
        "modelgate": "modelgate",
        "fastapi": "FastAPI baseline",
        "floor": "floor: uvloop+httptools, canned answer",
        "uvicorn": "floor: bare ASGI app under uvicorn",
    }
    try:
        servers["modelgate"] = start_modelgate(ctx, "modelgate-rest", SERVER_CPU, probe=True)
        servers["fastapi"] = start_fastapi(ctx, credit, SERVER_CPU)
        servers["floor"] = start_floor(ctx, SERVER_CPU)
        servers["uvicorn"] = start_uvicorn_floor(ctx, SERVER_CPU)
        urls = {
            name: f"http://127.0.0.1:{s.http_port}/v2/models/{workloads.CREDIT}/infer"
            for name, s in servers.items()
        }
        scripts = dict.fromkeys(servers, script)
        scripts["modelgate"] = loadgen.lua_script(
            ctx.work / "credit-modelgate.lua",
            [workloads.credit_json()],
            authorization=authorization(servers["modelgate"]),
        )
        _same_credit_answer(
            _post(urls["modelgate"], workloads.credit_json(), authorization(servers["modelgate"])),
            _post(urls["fastapi"], workloads.credit_json()),
        )

        def target(name: str, connections: int, seconds: float, cpus: str) -> Callable[[], Load]:
            return lambda: _checked(
                _with_server_cpu(
                    servers[name],
                    lambda: loadgen.wrk(urls[name], scripts[name], connections, seconds, cpus=cpus),
                ),
                name,
            )

        for name in servers:  # warm-up, not recorded
            target(name, 64, 2, LOAD_CPU)()
        before = _stats(servers["modelgate"].http_port, workloads.CREDIT)
        contenders = ("modelgate", "fastapi")
        runs = {
            (n, 64, LOAD_CPU): loads
            for n, loads in alternate(
                ctx, [(n, target(n, 64, ctx.duration, LOAD_CPU)) for n in contenders], _describe
            ).items()
        }
        after = _stats(servers["modelgate"].http_port, workloads.CREDIT)
        # At c=1 client and server never run at once; on this VM a wake-up across CPUs costs
        # tens of µs, so c=1 is measured with wrk on the server's CPU and, for reference, on
        # the other CPU.
        for cpus, names in (
            (SERVER_CPU, ("modelgate", "fastapi", "uvicorn", "floor")),
            (LOAD_CPU, ("modelgate",)),
        ):
            ctx.log(f"c=1 with wrk on CPU {cpus}")
            runs |= {
                (n, 1, cpus): loads
                for n, loads in alternate(
                    ctx, [(n, target(n, 1, ctx.short, cpus)) for n in names], _describe
                ).items()
            }
    finally:
        for server in servers.values():
            server.stop()
    med: dict[tuple[str, int, str], dict[str, float]] = {}
    for (name, connections, cpus), loads in runs.items():
        m = {
            "rps": _median([x.rps for x in loads]),
            "p50": _median([x.p50_ms or 0 for x in loads]),
            "p99": _median([x.p99_ms or 0 for x in loads]),
            "cpu": _median([x.extra["server_us_per_req"] for x in loads]),
        }
        med[(name, connections, cpus)] = m
        result.rows.append(
            [
                labels[name],
                str(connections),
                cpus,
                _n(m["rps"]),
                _ms(m["p50"]),
                _ms(m["p99"]),
                f"{m['cpu']:.0f} µs",
                _gc_text(loads),
                _background_text(loads),
                _rounds_text([x.rps for x in loads]),
            ]
        )
    mg64, fa64 = med[("modelgate", 64, LOAD_CPU)], med[("fastapi", 64, LOAD_CPU)]
    ratio = mg64["rps"] / fa64["rps"]
    p50 = med[("modelgate", 1, SERVER_CPU)]["p50"]
    p50_apart = med[("modelgate", 1, LOAD_CPU)]["p50"]
    floor = med[("floor", 1, SERVER_CPU)]["p50"]
    bare = med[("uvicorn", 1, SERVER_CPU)]["p50"]
    result.checks += [
        Check("REST c=64 throughput, modelgate / FastAPI", f"{ratio:.2f}x", ">= 1.0", ratio >= 1.0),
        Check(
            "REST c=64 modelgate p99",
            f"{_ms(mg64['p99'])} (FastAPI {_ms(fa64['p99'])})",
            "< 15 ms",
            mg64["p99"] < 15.0,
        ),
        Check(
            "REST c=1 modelgate p50 (wrk on the server's CPU)",
            f"{_ms(p50)} (uvicorn floor {_ms(bare)}, socket floor {_ms(floor)}; "
            f"wrk on CPU {LOAD_CPU}: {_ms(p50_apart)})",
            "< 0.2 ms",
            p50 < 0.2,
        ),
    ]
    executions = max(after["executions"] - before["executions"], 1)
    result.notes += [
        f"Servers pinned to CPU {SERVER_CPU}. c=64: wrk (`-t1 -c64 --latency`) pinned to CPU "
        f"{LOAD_CPU}, {ctx.rounds} alternating rounds of {ctx.duration:g} s after a 2 s warm-up "
        f"of each server. c=1: {ctx.rounds} alternating rounds of {ctx.short:g} s with wrk on "
        f"CPU {SERVER_CPU} (client and server take turns, so sharing a CPU costs nothing and "
        f"avoids the VM's cross-CPU wake-up), then again with wrk on CPU {LOAD_CPU}.",
        "Body: one 12-feature row as OIP JSON. Both servers run "
        f"`credit-risk` v{credit.version} ({credit.onnx.relative_to(ctx.models)}) inline with "
        "intra/inter_op_threads 1; their answers are compared before the load.",
        "FastAPI baseline: `bench/baseline_fastapi.py` under uvicorn (httptools, uvloop, 1 worker, "
        "no access log, no server/date headers, as modelgate). Floors (`bench/floor_http.py`, "
        "same canned answer as modelgate's): a uvloop Protocol with httptools (the machine's own "
        "HTTP round trip) and a bare ASGI callable under uvicorn with modelgate's flags (what "
        "uvicorn costs before any application code).",
        "modelgate runs under `bench/gc_probe.py`, which only records each garbage collection's "
        "duration (a gc callback); modelgate itself freezes its start-up objects out of the "
        "collector once it is ready (`modelgate.server`). GC column: share of the run's wall "
        "time spent in collections; full (gen-2) collections per round and the longest one.",
        "Server CPU/req: user+system CPU time of the server process over the run divided by "
        "the requests wrk completed. Others' cores: CPU used during the run by processes that "
        "are not part of the benchmark (other jobs on the machine).",
        "Inside modelgate, no socket (`python -m bench.inprocess rest`, pinned to CPU "
        f"{SERVER_CPU}, µs per request): "
        + (", ".join(f"{name} {micros:.1f}" for name, micros in layers.items()) or "n/a")
        + ".",
        f"modelgate's own statistics during the c=64 rounds: "
        f"{(after['inferences'] - before['inferences']) / executions:.1f} rows per model "
        "execution (adaptive batching, max_queue_delay 0).",
    ]
    return result


def _inprocess(ctx: Ctx, which: str) -> dict[str, float]:
    """µs per call of each layer, from ``bench.inprocess`` in a fresh process on CPU 0."""
    wait_quiet(ctx)
    try:
        argv = [sys.executable, "-m", "bench.inprocess", which, str(ctx.models), "1.5"]
        argv += ["--auth", ctx.auth]
        if ctx.redis_url is not None:
            argv += ["--redis", ctx.redis_url]
        out = run_bounded(pinned(SERVER_CPU, argv), timeout=300).stdout
        layers: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    except (RuntimeError, ValueError, IndexError) as exc:
        ctx.log(f"in-process breakdown failed: {exc}")
        return {}
    for name, micros in layers.items():
        ctx.log(f"in-process {name}: {micros:.1f} µs")
    return layers


# -- 3. gRPC vs a minimal grpc.aio server ------------------------------------------------
def _grpc_call(port: int, message: Any, auth: str) -> Any:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer(message, timeout=30, metadata=(("authorization", auth),))


def bench_grpc(ctx: Ctx) -> Result:
    import numpy as np

    credit = workloads.model_files(ctx.models, workloads.CREDIT)
    result = Result(
        "grpc",
        "credit-risk over gRPC: modelgate vs a minimal grpc.aio server",
        [
            "server",
            "concurrency",
            "req/s (median)",
            "mean latency",
            "server CPU/req",
            "others' cores",
            "rounds req/s",
        ],
    )
    message = workloads.grpc_request()
    body = ctx.work / "credit.grpc"
    body.write_bytes(workloads.grpc_frame(message))
    layers = _inprocess(ctx, "grpc")
    headers = ["content-type: application/grpc", "te: trailers"]
    connections, streams = 4, 16
    servers: dict[str, Server] = {}
    try:
        servers["modelgate"] = start_modelgate(ctx, "modelgate-grpc", SERVER_CPU)
        servers["grpc.aio"] = start_grpc_baseline(ctx, credit, SERVER_CPU)
        servers["grpc.aio on uvloop"] = start_grpc_baseline(ctx, credit, SERVER_CPU, True)
        answers = {
            n: _grpc_call(s.grpc_port, message, authorization(s)) for n, s in servers.items()
        }
        probs = [np.frombuffer(a.raw_output_contents[1], "<f4") for a in answers.values()]
        if not all(np.allclose(probs[0], p, atol=1e-5) for p in probs):
            raise RuntimeError(f"the servers disagree: {probs}")
        sizes = {n: 5 + a.ByteSize() for n, a in answers.items()}

        def target(name: str, seconds: float) -> Callable[[], Load]:
            url = (
                f"http://127.0.0.1:{servers[name].grpc_port}"
                "/inference.GRPCInferenceService/ModelInfer"
            )
            return lambda: _checked(
                _with_server_cpu(
                    servers[name],
                    lambda: loadgen.h2load(
                        url,
                        body,
                        connections=connections,
                        streams=streams,
                        seconds=seconds,
                        headers=[*headers, f"authorization: {authorization(servers[name])}"],
                        cpus=LOAD_CPU,
                        response_bytes=sizes[name],
                    ),
                ),
                name,
            )

        for name in servers:
            target(name, 2)()
        runs = alternate(ctx, [(n, target(n, ctx.duration)) for n in servers], _describe)
    finally:
        for server in servers.values():
            server.stop()
    med = {}
    for name, loads in runs.items():
        med[name] = _median([x.rps for x in loads])
        result.rows.append(
            [
                name,
                f"{connections}x{streams}",
                _n(med[name]),
                _ms(_median([x.mean_ms or 0 for x in loads])),
                f"{_median([x.extra['server_us_per_req'] for x in loads]):.0f} µs",
                _background_text(loads),
                _rounds_text([x.rps for x in loads]),
            ]
        )
    ratio = med["modelgate"] / med["grpc.aio"]
    result.checks += [
        Check(
            "gRPC c=64 throughput, modelgate / grpc.aio", f"{ratio:.2f}x", ">= 1.0", ratio >= 1.0
        ),
        Check(
            "gRPC c=64 throughput, modelgate / grpc.aio on uvloop",
            f"{med['modelgate'] / med['grpc.aio on uvloop']:.2f}x",
            "(info)",
            None,
        ),
    ]
    result.notes += [
        f"Load generator: h2load (nghttp2) pinned to CPU {LOAD_CPU}, {connections} connections x "
        f"{streams} concurrent streams = 64 calls in flight, replaying one pre-encoded gRPC "
        "message (`ModelInferRequest`, FP32 [1,12] in raw_input_contents) with "
        "`content-type: application/grpc` and `te: trailers`; every answer is checked to carry "
        "the full response message (h2load cannot see grpc-status, a failed call has no body). "
        "Chosen over a grpcio-based Python load generator (not measured): grpc in Python costs "
        "as much CPU per call in a client as in these servers, so one client vCPU would cap "
        "near the servers' own rate.",
        f"Servers pinned to CPU {SERVER_CPU}; {ctx.rounds} alternating rounds of "
        f"{ctx.duration:g} s after 2 s warm-up each. Baseline: `bench/baseline_grpc.py` "
        "(grpc.aio, the same stubs and ONNX file, inline), on asyncio's default loop as a "
        "minimal server would run, and on uvloop (`--uvloop`), the loop modelgate runs gRPC on.",
        "The servicer methods called directly, no grpc (`python -m bench.inprocess grpc`, CPU "
        f"{SERVER_CPU}, µs per call): "
        + (", ".join(f"{name} {micros:.1f}" for name, micros in layers.items()) or "n/a")
        + ".",
    ]
    return result


# -- 4. MiniLM single-sentence requests vs raw batched ONNX Runtime -----------------------
def bench_minilm(ctx: Ctx) -> Result:
    minilm = workloads.model_files(ctx.models, workloads.MINILM)
    batching = minilm.manifest.batching
    delay_ms = batching.max_queue_delay_us / 1e3 if batching else 0.0
    result = Result(
        "minilm",
        "MiniLM single-sentence requests vs raw batched ONNX Runtime",
        [
            "path",
            "concurrency",
            "sentences/s (median)",
            "p50",
            "p99",
            "server cores",
            "others' cores",
            "rounds sentences/s",
        ],
    )
    predictor = raw.minilm_predictor(minilm)
    raw32, raw1 = raw.minilm_call(predictor, 32), raw.minilm_call(predictor, 1)
    mg = start_modelgate(ctx, "modelgate-minilm", None)
    try:
        auth = authorization(mg)
        oip = loadgen.lua_script(
            ctx.work / "minilm-oip.lua",
            [workloads.sentence_json(s) for s in workloads.SENTENCES],
            authorization=auth,
        )
        openai = loadgen.lua_script(
            ctx.work / "minilm-openai.lua",
            [workloads.embeddings_json(s) for s in workloads.SENTENCES],
            authorization=auth,
        )
        base = f"http://127.0.0.1:{mg.http_port}"
        oip_url = f"{base}/v2/models/{workloads.MINILM}/infer"
        emb_url = f"{base}/v1/embeddings"
        answer = _post(oip_url, workloads.sentence_json(workloads.SENTENCES[0]), auth)
        assert answer["outputs"][0]["shape"] == [1, 384], answer
        embedded = _post(emb_url, workloads.embeddings_json("hi"), auth)
        assert len(embedded["data"][0]["embedding"]) == 384

        def over_http(
            url: str, script: Path, connections: int, seconds: float
        ) -> Callable[[], Load]:
            return lambda: _checked(
                _with_server_cpu(
                    mg, lambda: loadgen.wrk(url, script, connections, seconds, cpus=LOAD_CPU)
                ),
                url,
            )

        def in_process(
            call: Callable[[], Any], rows: int, seconds: float
        ) -> Callable[[], raw.Rate]:
            return lambda: raw.rate(call, rows, seconds)

        over_http(oip_url, oip, 64, 2)()
        over_http(emb_url, openai, 64, 2)()
        before = _stats(mg.http_port, workloads.MINILM)
        c64: dict[str, list[Any]] = alternate(
            ctx,
            [
                ("raw batch 32", in_process(raw32, 32, ctx.duration)),
                ("OIP infer", over_http(oip_url, oip, 64, ctx.duration)),
                ("/v1/embeddings", over_http(emb_url, openai, 64, ctx.duration)),
            ],
            lambda r: f"{r.rps:,.0f}/s" if isinstance(r, Load) else f"{r.rows_per_s:,.0f}/s",
        )
        after = _stats(mg.http_port, workloads.MINILM)
        c1: dict[str, list[Any]] = alternate(
            ctx,
            [
                ("raw batch 1", in_process(raw1, 1, ctx.short)),
                ("OIP infer", over_http(oip_url, oip, 1, ctx.short)),
            ],
            lambda r: _describe(r) if isinstance(r, Load) else f"median {_ms(r.median_call_ms)}",
        )
        after1 = _stats(mg.http_port, workloads.MINILM)
    finally:
        mg.stop()
    raw_b32 = _median([r.rows_per_s for r in c64["raw batch 32"]])
    result.rows.append(
        [
            "in-process, batch 32",
            "-",
            _n(raw_b32),
            _ms(_median([r.median_call_ms for r in c64["raw batch 32"]])) + " per batch",
            "-",
            "-",
            _background_text(c64["raw batch 32"]),
            _rounds_text([r.rows_per_s for r in c64["raw batch 32"]]),
        ]
    )
    med: dict[str, float] = {}
    for name in ("OIP infer", "/v1/embeddings"):
        loads = c64[name]
        med[name] = _median([x.rps for x in loads])
        result.rows.append(
            [
                f"modelgate {name}, 1 sentence/request",
                "64",
                _n(med[name]),
                _ms(_median([x.p50_ms or 0 for x in loads])),
                _ms(_median([x.p99_ms or 0 for x in loads])),
                f"{_median([x.extra['server_cores'] for x in loads]):.2f}",
                _background_text(loads),
                _rounds_text([x.rps for x in loads]),
            ]
        )
    raw_b1 = _median([r.median_call_ms for r in c1["raw batch 1"]])
    mg_p50 = _median([x.p50_ms or 0 for x in c1["OIP infer"]])
    result.rows.append(
        [
            "in-process, batch 1",
            "1",
            _n(_median([r.rows_per_s for r in c1["raw batch 1"]])),
            _ms(raw_b1),
            _ms(_median([r.p99_call_ms for r in c1["raw batch 1"]])),
            "-",
            _background_text(c1["raw batch 1"]),
            _rounds_text([r.rows_per_s for r in c1["raw batch 1"]]),
        ]
    )
    result.rows.append(
        [
            "modelgate OIP infer, 1 sentence/request",
            "1",
            _n(_median([x.rps for x in c1["OIP infer"]])),
            _ms(mg_p50),
            _ms(_median([x.p99_ms or 0 for x in c1["OIP infer"]])),
            f"{_median([x.extra['server_cores'] for x in c1['OIP infer']]):.2f}",
            _background_text(c1["OIP infer"]),
            _rounds_text([x.rps for x in c1["OIP infer"]]),
        ]
    )
    ratio = med["OIP infer"] / raw_b32
    overhead = mg_p50 - raw_b1
    served1 = max(after1["inferences"] - after["inferences"], 1)
    queue1 = (after1["queue_ns"] - after["queue_ns"]) / served1 / 1e6
    compute1 = (after1["compute_ns"] - after["compute_ns"]) / served1 / 1e6
    result.checks += [
        Check(
            "MiniLM c=64 OIP sentences/s / raw batch-32", f"{ratio:.2f}x", ">= 0.85", ratio >= 0.85
        ),
        Check(
            "MiniLM c=64 /v1/embeddings sentences/s / raw batch-32",
            f"{med['/v1/embeddings'] / raw_b32:.2f}x",
            "(info)",
            None,
        ),
        Check(
            "MiniLM c=1 p50 overhead over raw batch-1",
            f"{_ms(overhead)} ({_ms(mg_p50)} vs {_ms(raw_b1)}; in modelgate per request: queue "
            f"{_ms(queue1)}, compute {_ms(compute1)})",
            f"<= {delay_ms + 1:g} ms (max_queue_delay {delay_ms:g} ms + 1 ms)",
            overhead <= delay_ms + 1,
        ),
    ]
    executions = max(after["executions"] - before["executions"], 1)
    inferences = after["inferences"] - before["inferences"]
    result.notes += [
        "Server cores: CPU time of the server process per second of the run (ONNX Runtime's "
        "intra-op threads spin while they wait for work, which shows here).",
        f"modelgate not pinned (the model runs intra_op_threads 2 on both cores), wrk pinned to "
        f"CPU {LOAD_CPU}; raw ONNX Runtime runs in the benchmark process while the server is "
        f"idle. {ctx.rounds} alternating rounds ({ctx.duration:g} s at c=64, {ctx.short:g} s at "
        "c=1); wrk sends round-robin 8 different 16-token sentences.",
        f"modelgate's statistics over the c=64 rounds (OIP and /v1/embeddings): "
        f"{inferences / executions:.1f} sentences per model execution; per request on average "
        f"{(after['queue_ns'] - before['queue_ns']) / max(inferences, 1) / 1e6:.1f} ms queued "
        f"and {(after['compute_ns'] - before['compute_ns']) / max(inferences, 1) / 1e6:.1f} ms in "
        "its batch's execution (tokenization, ONNX Runtime, pooling, in a worker thread).",
    ]
    return result


# -- 5. --workers 2 vs --workers 1 --------------------------------------------------------
def bench_workers(ctx: Ctx) -> Result:
    result = Result(
        "workers",
        "credit-risk over REST: --workers 2 vs --workers 1",
        [
            "server",
            "req/s (median)",
            "p50",
            "p99",
            "server cores",
            "wrk cores",
            "per-worker CPU share",
            "per-worker connections",
            "others' cores",
            "rounds req/s",
        ],
    )
    servers: dict[str, Server] = {}
    scripts: dict[str, Path] = {}
    try:
        for workers in (1, 2):
            name = f"--workers {workers}"
            servers[name] = start_modelgate(ctx, f"modelgate-w{workers}", None, workers)
            scripts[name] = loadgen.lua_script(
                ctx.work / f"credit-w{workers}.lua",
                [workloads.credit_json()],
                authorization=authorization(servers[name]),
            )

        def target(name: str, seconds: float) -> Callable[[], Load]:
            server = servers[name]
            url = f"http://127.0.0.1:{server.http_port}/v2/models/{workloads.CREDIT}/infer"

            def run() -> Load:
                pids = worker_pids(server.pid)
                cpu0 = {p: cpu_seconds(p) for p in pids}
                sample: dict[int, int] = {}

                def look() -> None:
                    sample.update(established_per_process(pids, server.http_port))

                timer = threading.Timer(seconds / 2, look)
                timer.start()
                try:
                    load = _checked(
                        _with_server_cpu(
                            server,
                            lambda: loadgen.wrk(url, scripts[name], 64, seconds, cpus=None),
                        ),
                        name,
                    )
                finally:
                    timer.cancel()
                spent = {p: cpu_seconds(p) - cpu0[p] for p in pids}
                total = sum(spent.values()) or 1.0
                load.extra.update({f"cpu_share_{i}": spent[p] / total for i, p in enumerate(pids)})
                load.extra.update({f"conns_{i}": sample.get(p, 0) for i, p in enumerate(pids)})
                load.extra["wrk_cores"] = load.cpu_s / max(load.seconds, 1e-9)
                return load

            return run

        for name in servers:
            target(name, 2)()
        runs = alternate(ctx, [(n, target(n, ctx.duration)) for n in servers], _describe)
    finally:
        for server in servers.values():
            server.stop()
    med: dict[str, float] = {}
    balance_ok = True
    for name, loads in runs.items():
        med[name] = _median([x.rps for x in loads])
        keys = sorted(k for k in loads[0].extra if k.startswith("cpu_share_"))
        shares = [_median([x.extra[k] for x in loads]) for k in keys]
        conns = [[int(x.extra[k.replace("cpu_share", "conns")]) for x in loads] for k in keys]
        if len(keys) > 1:
            balance_ok &= all(0.35 <= s <= 0.65 for s in shares)
            balance_ok &= all(0.30 * 64 <= c <= 0.70 * 64 for per in conns for c in per)
        result.rows.append(
            [
                name,
                _n(med[name]),
                _ms(_median([x.p50_ms or 0 for x in loads])),
                _ms(_median([x.p99_ms or 0 for x in loads])),
                f"{_median([x.extra['server_cores'] for x in loads]):.2f}",
                f"{_median([x.extra['wrk_cores'] for x in loads]):.2f}",
                " / ".join(f"{s:.0%}" for s in shares),
                " / ".join("+".join(str(c) for c in per) for per in conns),
                _background_text(loads),
                _rounds_text([x.rps for x in loads]),
            ]
        )
    ratio = med["--workers 2"] / med["--workers 1"]
    w2 = runs["--workers 2"]
    per_core = {
        n: _median([x.rps / max(x.extra["server_cores"], 1e-9) for x in loads])
        for n, loads in runs.items()
    }
    result.checks += [
        Check(
            "REST c=64 throughput, --workers 2 / --workers 1",
            f"{ratio:.2f}x",
            ">= 1.6",
            ratio >= 1.6,
        ),
        Check(
            "--workers 2 spreads load (each worker 35-65% of CPU, 30-70% of connections)",
            "; ".join(r[6] + " CPU, " + r[7] + " conns" for r in result.rows[1:]),
            "even",
            balance_ok,
        ),
        Check(
            "req/s per server core, --workers 2 / --workers 1",
            f"{per_core['--workers 2'] / per_core['--workers 1']:.2f}x",
            "(info)",
            None,
        ),
    ]
    wrk_cores = _median([x.extra["wrk_cores"] for x in w2])
    result.notes += [
        "Nothing pinned: the workers and wrk (`-t1 -c64`) share both cores, as they would on a "
        f"2-core host. wrk alone uses {wrk_cores:.2f} cores at --workers 2, so the server can "
        f"get at most {2 - wrk_cores:.2f} cores there, against a whole core at --workers 1: "
        f"the ratio this machine allows is about {2 - wrk_cores:.2f}x, not 2x.",
        "Per-worker CPU share: user+system time of each worker process from /proc/<pid>/stat "
        "over the run. Per-worker connections: ESTABLISHED sockets on the REST port that each "
        "worker holds at mid-run (from /proc/net/tcp and /proc/<pid>/fd), one number per round.",
    ]
    return result


SUITES: dict[str, tuple[str, Callable[[Ctx], Result]]] = {
    "raw": ("In-process ONNX Runtime ceiling", bench_raw),
    "rest": ("REST vs minimal FastAPI", bench_rest),
    "grpc": ("gRPC vs minimal grpc.aio", bench_grpc),
    "minilm": ("MiniLM single sentences vs raw batch 32", bench_minilm),
    "workers": ("--workers 2 vs 1", bench_workers),
}
