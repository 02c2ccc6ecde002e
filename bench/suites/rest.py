"""2. credit-risk over REST: modelgate against a minimal FastAPI + ONNX Runtime app."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from bench import loadgen, workloads
from bench.loadgen import Load
from bench.procs import Server
from bench.suites.context import LOAD_CPU, SERVER_CPU, Check, Ctx, Result
from bench.suites.measuring import (
    alternate,
    authorization,
    background_text,
    checked,
    describe,
    gc_text,
    inprocess_layers,
    median,
    model_stats,
    ms_text,
    number_text,
    post,
    rounds_text,
    with_server_cpu,
)
from bench.suites.servers import (
    same_credit_answer,
    start_fastapi,
    start_floor,
    start_modelgate,
    start_uvicorn_floor,
)
from bench.sysinfo import descendants

#: the placement in which neither the server nor wrk is pinned
ANY_CPU = ""


def unpin(pid: int, cpus: str | None = None) -> None:
    """Set the CPU affinity of ``pid``'s every thread and child to ``cpus`` (None: every CPU)."""
    allowed = cpus if cpus is not None else f"0-{(os.cpu_count() or 1) - 1}"
    for each in [pid, *descendants(pid)]:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", allowed, str(each)],
            check=True,
            capture_output=True,
            timeout=10,
        )


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
    layers = inprocess_layers(ctx, "rest")
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
        same_credit_answer(
            post(urls["modelgate"], workloads.credit_json(), authorization(servers["modelgate"])),
            post(urls["fastapi"], workloads.credit_json()),
        )

        def target(name: str, connections: int, seconds: float, cpus: str) -> Callable[[], Load]:
            return lambda: checked(
                with_server_cpu(
                    servers[name],
                    lambda: loadgen.wrk(urls[name], scripts[name], connections, seconds, cpus=cpus),
                ),
                name,
            )

        for name in servers:  # warm-up, not recorded
            target(name, 64, 2, LOAD_CPU)()
        before = model_stats(servers["modelgate"].http_port, workloads.CREDIT)
        contenders = ("modelgate", "fastapi")
        runs = {
            (n, 64, LOAD_CPU): loads
            for n, loads in alternate(
                ctx, [(n, target(n, 64, ctx.duration, LOAD_CPU)) for n in contenders], describe
            ).items()
        }
        after = model_stats(servers["modelgate"].http_port, workloads.CREDIT)
        # As a user runs it: server and wrk free to run on any CPU (the "unpinned")
        for name in contenders:
            unpin(servers[name].pid)
        runs |= {
            (n, 64, ANY_CPU): loads
            for n, loads in alternate(
                ctx, [(n, target(n, 64, ctx.duration, "")) for n in contenders], describe
            ).items()
        }
        for name in contenders:
            unpin(servers[name].pid, SERVER_CPU)
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
                    ctx, [(n, target(n, 1, ctx.short, cpus)) for n in names], describe
                ).items()
            }
    finally:
        for server in servers.values():
            server.stop()
    med: dict[tuple[str, int, str], dict[str, float]] = {}
    for (name, connections, cpus), loads in runs.items():
        m = {
            "rps": median([x.rps for x in loads]),
            "p50": median([x.p50_ms or 0 for x in loads]),
            "p99": median([x.p99_ms or 0 for x in loads]),
            "cpu": median([x.extra["server_us_per_req"] for x in loads]),
        }
        med[(name, connections, cpus)] = m
        result.rows.append(
            [
                labels[name],
                str(connections),
                cpus or "any (server too)",
                number_text(m["rps"]),
                ms_text(m["p50"]),
                ms_text(m["p99"]),
                f"{m['cpu']:.0f} µs",
                gc_text(loads),
                background_text(loads),
                rounds_text([x.rps for x in loads]),
            ]
        )
    mg64, fa64 = med[("modelgate", 64, LOAD_CPU)], med[("fastapi", 64, LOAD_CPU)]
    ratio = mg64["rps"] / fa64["rps"]
    free = med[("modelgate", 64, ANY_CPU)]["rps"] / med[("fastapi", 64, ANY_CPU)]["rps"]
    p50 = med[("modelgate", 1, SERVER_CPU)]["p50"]
    p50_apart = med[("modelgate", 1, LOAD_CPU)]["p50"]
    floor = med[("floor", 1, SERVER_CPU)]["p50"]
    bare = med[("uvicorn", 1, SERVER_CPU)]["p50"]
    result.checks += [
        Check("REST c=64 throughput, modelgate / FastAPI", f"{ratio:.2f}x", ">= 1.0", ratio >= 1.0),
        Check(
            "REST c=64 throughput, modelgate / FastAPI, nothing pinned",
            f"{free:.2f}x",
            ">= 1.0",
            free >= 1.0,
        ),
        Check(
            "REST c=64 modelgate p99",
            f"{ms_text(mg64['p99'])} (FastAPI {ms_text(fa64['p99'])})",
            "< 15 ms",
            mg64["p99"] < 15.0,
        ),
        Check(
            "REST c=1 modelgate p50 (wrk on the server's CPU)",
            f"{ms_text(p50)} (uvicorn floor {ms_text(bare)}, socket floor {ms_text(floor)}; "
            f"wrk on CPU {LOAD_CPU}: {ms_text(p50_apart)})",
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
        f"avoids the VM's cross-CPU wake-up), then again with wrk on CPU {LOAD_CPU}. "
        'Nothing pinned ("any"): the same c=64 rounds with the two servers\' affinity '
        "widened to every CPU (`taskset -a -p`) and wrk unpinned, as a user runs them.",
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
