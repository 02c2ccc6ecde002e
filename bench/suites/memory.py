"""Server memory: resident set size (RSS) of modelgate with both demo models loaded, idle and
after each of 3 runs of credit-risk REST c=64, beside the minimal FastAPI app's (issue 11:
reported, and no growth across the runs). The first run grows every server (connection
buffers, allocator arenas, caches warming); growth is counted from the first run's end to
the last's, where a leak would keep adding."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from bench import workloads
from bench.loadgen import Load
from bench.procs import Server
from bench.suites.context import LOAD_CPU, SERVER_CPU, Check, Ctx, Result
from bench.suites.credit_load import credit_body, infer_url, script_for, served_by
from bench.suites.measuring import (
    alternate,
    authorization,
    describe,
    median,
    number_text,
    post,
)
from bench.suites.servers import start_fastapi, start_modelgate
from bench.sysinfo import descendants

#: runs of load per server
RUNS = 3
#: a load run lasts this many times ``--duration`` (60 s at the default 10)
LOAD_FACTOR = 6
#: growth from the first run's end to the last's that still counts as none: allocator
#: noise, whichever is larger
TOLERANCE_MIB, TOLERANCE_SHARE = 2.0, 0.01
MODELGATE, FASTAPI = "modelgate", "FastAPI baseline"


def vm_rss_kib(status: str) -> int:
    """The ``VmRSS`` of a ``/proc/<pid>/status`` text, in KiB (0 when absent: a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its descendants, MiB (shared pages counted in each)."""
    total = 0
    for each in [pid, *descendants(pid)]:
        try:
            total += vm_rss_kib(Path(f"/proc/{each}/status").read_text())
        except OSError:
            continue  # gone meanwhile
    return total / 1024


def growth_mib(after_runs: list[float]) -> float:
    """Growth from the first run's end to the last's."""
    return after_runs[-1] - after_runs[0] if after_runs else 0.0


def holds_steady(after_runs: list[float]) -> bool:
    """Whether RSS stopped growing after the first run (within the tolerance)."""
    allowed = max(TOLERANCE_MIB, TOLERANCE_SHARE * (after_runs[0] if after_runs else 0.0))
    return growth_mib(after_runs) <= allowed


def settled_rss_mib(server: Server) -> float:
    """RSS once the requests wrk left in flight are answered."""
    time.sleep(1.0)
    return tree_rss_mib(server.pid)


def bench_rss(ctx: Ctx) -> Result:
    files = workloads.model_files(ctx.models, workloads.CREDIT)
    seconds = ctx.duration * LOAD_FACTOR
    result = Result(
        "rss",
        f"Server RSS (MiB): idle, then after each of {RUNS} runs of credit-risk REST c=64 "
        f"for {seconds:g} s",
        ["server", "idle", *[f"after run {i + 1}" for i in range(RUNS)], "growth 1→3",
         "req/s (median)"],
    )  # fmt: skip
    body = credit_body(workloads.CREDIT_ROW)
    servers: dict[str, Server] = {}
    idle: dict[str, float] = {}
    try:
        servers[MODELGATE] = start_modelgate(ctx, "modelgate-rss", SERVER_CPU)
        servers[FASTAPI] = start_fastapi(ctx, files, SERVER_CPU)
        loaded = post(f"http://127.0.0.1:{servers[MODELGATE].http_port}/v2/repository/index", b"{}")
        for name, server in servers.items():
            post(infer_url(server), body, authorization(server))
            idle[name] = settled_rss_mib(server)

        def target(name: str) -> Callable[[], Load]:
            server = servers[name]
            script = script_for(server, ctx.work / f"rss-{len(name)}.lua", body)
            run = served_by(server, [server], script, 64, seconds, LOAD_CPU)

            def measured() -> Load:
                load = run()
                load.extra["rss_mib"] = settled_rss_mib(server)
                return load

            return measured

        runs = alternate(
            dataclasses.replace(ctx, rounds=RUNS), [(n, target(n)) for n in servers], describe
        )
    finally:
        for server in servers.values():
            server.stop()
    after: dict[str, list[float]] = {}
    for name, loads in runs.items():
        after[name] = [x.extra["rss_mib"] for x in loads]
        result.rows.append(
            [
                name,
                f"{idle[name]:.1f}",
                *[f"{v:.1f}" for v in after[name]],
                f"{growth_mib(after[name]):+.1f}",
                number_text(median([x.rps for x in loads])),
            ]
        )
    result.checks += [
        Check(
            f"modelgate RSS growth from run 1 to run {RUNS}",
            f"{growth_mib(after[MODELGATE]):+.1f} MiB (FastAPI "
            f"{growth_mib(after[FASTAPI]):+.1f} MiB)",
            f"<= max({TOLERANCE_MIB:g} MiB, {TOLERANCE_SHARE:.0%})",
            holds_steady(after[MODELGATE]),
        ),
        Check(
            "modelgate RSS, idle / after the last run",
            f"{idle[MODELGATE]:.0f} / {after[MODELGATE][-1]:.0f} MiB (FastAPI "
            f"{idle[FASTAPI]:.0f} / {after[FASTAPI][-1]:.0f} MiB)",
            "(info)",
            None,
        ),
    ]
    models = ", ".join(
        f"{m['name']} v{m.get('version', '?')} {m.get('state', '?')}" for m in loaded
    )
    result.notes += [
        f"RSS: VmRSS of the server's process tree from /proc/<pid>/status, 1 s after each "
        f"run ends. Idle: after start-up and one request. Servers pinned to CPU {SERVER_CPU}, "
        f"wrk (`-t1 -c64`) to CPU {LOAD_CPU}; {RUNS} runs of {seconds:g} s per server, "
        "alternating, no warm-up (the first run is the warm-up growth is measured after).",
        f"modelgate's repository index at start: {models}. The FastAPI baseline "
        "(`bench/baseline_fastapi.py`) loads credit-risk only: the gap includes MiniLM's "
        "ONNX session and tokenizer as well as modelgate's own state.",
    ]
    return result
