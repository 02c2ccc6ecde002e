"""Measuring helpers: alternating rounds, waiting for a quiet machine, a server's CPU over a load,
GC pauses, small HTTP calls, the in-process figures, and how numbers are printed.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from bench import loadgen, procs, raw, workloads
from bench.loadgen import Load
from bench.procs import Server, pinned, run_bounded
from bench.suites.context import SERVER_CPU, Ctx, T
from bench.sysinfo import (
    busy_seconds,
    own_cpu,
    tree_cpu,
)


def ms_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.0f} µs" if value < 1 else f"{value:.2f} ms"


def number_text(value: float) -> str:
    return f"{value:,.0f}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rounds_text(values: list[float]) -> str:
    return " / ".join(number_text(v) for v in values)


def own_cpu_seconds() -> float:
    """CPU seconds of everything this benchmark runs: itself, its reaped children (the load
    generators) and every server it started that is still running."""
    return own_cpu() + loadgen.children_cpu() + sum(tree_cpu(s.pid) for s in procs.live())


def wait_quiet(ctx: Ctx, limit: float = 20.0, threshold: float = 0.25) -> float:
    """Wait until other processes use under ``threshold`` cores: at most ``limit`` s here and
    ``ctx.quiet_budget`` s over the whole invocation. Returns the cores they used last."""
    deadline = time.monotonic() + min(limit, ctx.quiet_budget[0])
    while True:
        busy, mine, start = busy_seconds(), own_cpu_seconds(), time.monotonic()
        time.sleep(0.5)
        others = (busy_seconds() - busy - (own_cpu_seconds() - mine)) / (time.monotonic() - start)
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
            busy, mine, start = busy_seconds(), own_cpu_seconds(), time.monotonic()
            outcome = run()
            elapsed = time.monotonic() - start
            spent = busy_seconds() - busy - (own_cpu_seconds() - mine)
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


def describe(load: Load) -> str:
    text = f"{load.rps:,.0f} req/s"
    if load.p50_ms is not None:
        text += f", p50 {ms_text(load.p50_ms)}, p99 {ms_text(load.p99_ms)}"
    elif load.mean_ms is not None:
        text += f", mean {ms_text(load.mean_ms)}"
    if "server_us_per_req" in load.extra:
        text += f", server CPU {load.extra['server_us_per_req']:.0f} µs/req"
    return text


def checked(load: Load, what: str) -> Load:
    if load.errors:
        raise RuntimeError(f"{what}: {load.errors} failed requests out of {load.requests}")
    if load.requests == 0:
        raise RuntimeError(f"{what}: no request completed")
    return load


def with_server_cpu(server: Server, run: Callable[[], Load]) -> Load:
    """Run a load and add the server's CPU per request (whole process tree)."""
    before = tree_cpu(server.pid)
    pauses = len(gc_pauses(server))
    load = run()
    spent = tree_cpu(server.pid) - before
    load.extra["server_cpu_s"] = spent
    load.extra["server_us_per_req"] = spent / max(load.requests, 1) * 1e6
    load.extra["server_cores"] = spent / max(load.seconds, 1e-9)
    if server.gc_file is not None:
        time.sleep(0.6)  # the probe writes twice a second
        during = gc_pauses(server)[pauses:]
        full = [s for g, s in during if g == 2]
        load.extra["gc_share"] = sum(s for _, s in during) / max(load.seconds, 1e-9)
        load.extra["gc2_count"] = len(full)
        load.extra["gc2_max_ms"] = max(full, default=0.0) * 1e3
    return load


def gc_pauses(server: Server) -> list[tuple[int, float]]:
    if server.gc_file is None or not server.gc_file.exists():
        return []
    return [tuple(json.loads(line)) for line in server.gc_file.read_text().splitlines() if line]


def authorization(server: Server) -> str:
    """The Authorization header of requests to ``server`` (bootstrap or tenant key)."""
    return server.authorization or workloads.AUTHORIZATION


def post(url: str, body: bytes, auth: str = workloads.AUTHORIZATION) -> Any:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"content-type": "application/json", "authorization": auth},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"authorization": workloads.AUTHORIZATION})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def model_stats(port: int, model: str) -> dict[str, int]:
    """The model's counters once the server is idle (a load generator stops with requests in
    flight; they finish after it exits and must not count in the next measurement)."""
    totals: dict[str, int] = {}
    deadline = time.monotonic() + 10
    while True:
        doc = get_json(f"http://127.0.0.1:{port}/v2/models/{model}/stats")
        last, totals = totals, {"inferences": 0, "executions": 0, "queue_ns": 0, "compute_ns": 0}
        for entry in doc["model_stats"]:
            totals["inferences"] += entry["inference_count"]
            totals["executions"] += entry["execution_count"]
            totals["queue_ns"] += entry["inference_stats"]["queue"]["ns"]
            totals["compute_ns"] += entry["inference_stats"]["compute_infer"]["ns"]
        if totals == last or time.monotonic() > deadline:
            return totals
        time.sleep(0.3)


def gc_text(loads: list[Load]) -> str:
    """Median share of time in GC, and the full (gen-2) collections per round with the longest."""
    if not loads or "gc_share" not in loads[0].extra:
        return "-"
    share = median([x.extra["gc_share"] for x in loads])
    count = median([x.extra["gc2_count"] for x in loads])
    longest = max(x.extra["gc2_max_ms"] for x in loads)
    return f"{share:.1%}; {count:.0f} full, max {longest:.1f} ms"


def background_text(outcomes: list[Any]) -> str:
    values = [
        o.extra.get("background", 0.0) if isinstance(o, Load) else getattr(o, "background", 0.0)
        for o in outcomes
    ]
    return f"{median(values):.2f}"


def inprocess_layers(ctx: Ctx, which: str) -> dict[str, float]:
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
