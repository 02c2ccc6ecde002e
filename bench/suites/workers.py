"""5. --workers 2 against --workers 1."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from bench import loadgen, workloads
from bench.loadgen import Load
from bench.procs import Server
from bench.suites.context import Check, Ctx, Result
from bench.suites.measuring import (
    alternate,
    authorization,
    background_text,
    checked,
    describe,
    median,
    ms_text,
    number_text,
    rounds_text,
    with_server_cpu,
)
from bench.suites.servers import start_modelgate
from bench.sysinfo import (
    cpu_seconds,
    established_per_process,
    worker_pids,
)


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
                    load = checked(
                        with_server_cpu(
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
        runs = alternate(ctx, [(n, target(n, ctx.duration)) for n in servers], describe)
    finally:
        for server in servers.values():
            server.stop()
    med: dict[str, float] = {}
    balance_ok = True
    for name, loads in runs.items():
        med[name] = median([x.rps for x in loads])
        keys = sorted(k for k in loads[0].extra if k.startswith("cpu_share_"))
        shares = [median([x.extra[k] for x in loads]) for k in keys]
        conns = [[int(x.extra[k.replace("cpu_share", "conns")]) for x in loads] for k in keys]
        if len(keys) > 1:
            balance_ok &= all(0.35 <= s <= 0.65 for s in shares)
            balance_ok &= all(0.30 * 64 <= c <= 0.70 * 64 for per in conns for c in per)
        result.rows.append(
            [
                name,
                number_text(med[name]),
                ms_text(median([x.p50_ms or 0 for x in loads])),
                ms_text(median([x.p99_ms or 0 for x in loads])),
                f"{median([x.extra['server_cores'] for x in loads]):.2f}",
                f"{median([x.extra['wrk_cores'] for x in loads]):.2f}",
                " / ".join(f"{s:.0%}" for s in shares),
                " / ".join("+".join(str(c) for c in per) for per in conns),
                background_text(loads),
                rounds_text([x.rps for x in loads]),
            ]
        )
    ratio = med["--workers 2"] / med["--workers 1"]
    w2 = runs["--workers 2"]
    per_core = {
        n: median([x.rps / max(x.extra["server_cores"], 1e-9) for x in loads])
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
    wrk_cores = median([x.extra["wrk_cores"] for x in w2])
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
