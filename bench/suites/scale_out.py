"""The scale-out path: every request crosses the gateway -> node gRPC hop. credit-risk over
REST c=64 through a gateway and one node, and a gateway and two nodes, all ``modelgate serve``
processes (``--role gateway`` / ``--role node``, nodes found in Redis as
docs/scale-out.md runs them), against one all-in-one process. Issue 11's target is on CPU,
not throughput: the CPU per request of the gateway and its nodes together (from /proc, every
process tree) at most 1.5x the all-in-one's. A gateway keeps its limits and quotas in the
Redis it finds nodes in, so the target compares with an all-in-one doing the same (what the
hop costs); the all-in-one keeping them in memory, as one process runs by default, is shown
beside it."""

from __future__ import annotations

import dataclasses
import time

from bench import workloads
from bench.loadgen import Load
from bench.procs import Server
from bench.suites.context import LOAD_CPU, SERVER_CPU, Check, Ctx, Result
from bench.suites.credit_load import (
    COLUMNS,
    credit_body,
    infer_url,
    row_cells,
    script_for,
    served_by,
    summary,
)
from bench.suites.measuring import alternate, authorization, describe, median, post
from bench.suites.servers import start_modelgate

#: issue 11's target: CPU per request of gateway and nodes / the all-in-one's
TARGET = 1.5
#: what the gateway sends its nodes, which they accept as their admin key
NODE_KEY = "bench-node-key-0123456789abcdef"
ALL_IN_ONE = "all-in-one, limits in Redis"
ALONE = "all-in-one, limits in memory"


def start_cluster(ctx: Ctx, tag: str, nodes: int) -> list[Server]:
    """A gateway and ``nodes`` nodes pinned with the all-in-one, under a Redis key prefix of
    their own (nodes of another cluster of the run stay out of its directory); the gateway
    first in the list, ready once an inference through it succeeds."""
    assert ctx.redis_prefix is not None
    cluster = dataclasses.replace(ctx, redis_prefix=f"{ctx.redis_prefix}{tag}:")
    as_node = dataclasses.replace(cluster, auth="admin")  # the gateway's key, not a tenant's
    started: list[Server] = []
    try:
        for index in range(nodes):
            started.append(
                start_modelgate(
                    as_node,
                    f"{tag}-node-{index}",
                    SERVER_CPU,
                    args=("--role", "node", "--node-id", f"{tag}-{index}"),
                    env={"MODELGATE_ADMIN_KEY": NODE_KEY},
                )
            )
        gateway = start_modelgate(
            cluster,
            f"{tag}-gateway",
            SERVER_CPU,
            args=("--role", "gateway"),
            env={"MODELGATE_NODE_KEY": NODE_KEY},
        )
        started.insert(0, gateway)
        wait_served(gateway, nodes)
    except BaseException:
        for server in started:
            server.stop()
        raise
    return started


def wait_served(gateway: Server, nodes: int, timeout: float = 60.0) -> None:
    """Until the gateway answers credit-risk (it finds nodes at its next directory refresh)."""
    deadline = time.monotonic() + timeout
    body = credit_body(workloads.CREDIT_ROW)
    while True:
        try:
            post(infer_url(gateway), body, authorization(gateway))
            return
        except OSError as exc:  # urllib's HTTPError (a 503 with no node yet) is an OSError
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the gateway found none of its {nodes} node(s) in {timeout:.0f} s: {exc}\n"
                    + gateway.log_tail()
                ) from exc
            time.sleep(0.5)


def bench_gateway(ctx: Ctx) -> Result:
    if ctx.redis_url is None:
        raise RuntimeError("the gateway row needs a Redis URL (gateways find nodes there)")
    result = Result(
        "gateway",
        "credit-risk over REST c=64: gateway + node(s) vs one all-in-one process",
        ["servers", *COLUMNS, "CPU/req of each"],
    )
    body = credit_body(workloads.CREDIT_ROW)
    setups: dict[str, list[Server]] = {}
    try:
        memory = dataclasses.replace(ctx, redis_url=None)
        setups[ALONE] = [start_modelgate(memory, "all-in-one-memory", SERVER_CPU)]
        setups[ALL_IN_ONE] = [start_modelgate(ctx, "all-in-one-redis", SERVER_CPU)]
        setups["gateway + 1 node"] = start_cluster(ctx, "one", 1)
        setups["gateway + 2 nodes"] = start_cluster(ctx, "two", 2)
        rounds = {}
        for index, (name, servers) in enumerate(setups.items()):
            script = script_for(servers[0], ctx.work / f"gateway-{index}.lua", body)
            served_by(servers[0], servers, script, 64, 2, LOAD_CPU)()  # warm-up
            rounds[name] = served_by(servers[0], servers, script, 64, ctx.duration, LOAD_CPU)
        runs = alternate(ctx, list(rounds.items()), describe)
    finally:
        for servers in setups.values():
            for server in servers:
                server.stop()
    med = {name: summary(loads) for name, loads in runs.items()}
    for name, loads in runs.items():
        servers = setups[name]
        each = [f"{s.name.split('-', 1)[1]} {own_cpu(loads, s):.0f} µs" for s in servers]
        result.rows.append([name, *row_cells(loads), "; ".join(each) if len(servers) > 1 else "-"])
    base, alone = med[ALL_IN_ONE]["cpu"], med[ALONE]["cpu"]
    for name in setups:
        if name in (ALL_IN_ONE, ALONE):
            continue
        ratio = med[name]["cpu"] / base
        result.checks += [
            Check(
                f"CPU per request, {name} together / {ALL_IN_ONE}",
                f"{ratio:.2f}x ({med[name]['cpu']:.0f} vs {base:.0f} µs)",
                f"<= {TARGET}",
                ratio <= TARGET,
            ),
            Check(
                f"CPU per request, {name} together / {ALONE}",
                f"{med[name]['cpu'] / alone:.2f}x ({med[name]['cpu']:.0f} vs {alone:.0f} µs)",
                "(info)",
                None,
            ),
        ]
    result.notes += [
        f"Every server process pinned to CPU {SERVER_CPU} (gateway and nodes share it, as the "
        f"all-in-one has it alone), wrk (`-t1 -c64`) to CPU {LOAD_CPU}; {ctx.rounds} "
        f"alternating rounds of {ctx.duration:g} s after a 2 s warm-up of each setup.",
        "CPU/req: user+system CPU time of every process of the setup (gateway and nodes "
        "together) over the run, from /proc, divided by the requests wrk completed. Redis "
        "(node directory; limits and quotas of the gateways and of one all-in-one) is not "
        "counted.",
        "Nodes: `modelgate serve --role node` with the demo models as `make run` builds them, "
        "found by the gateway in Redis (each cluster under a key prefix of its own); the "
        "gateway (`--role gateway`) authenticates, admits and validates, then forwards over "
        "OIP gRPC with MODELGATE_NODE_KEY; the node runs the model. The gateway checks each "
        "request for anomalies itself (credit-risk's `anomaly` section, from the profile "
        "statistics its nodes announce) and merges concurrent requests into one node call "
        '(docs/scale-out.md, "Anomaly checks"); the nodes do not check its calls again.',
    ]
    return result


def own_cpu(loads: list[Load], server: Server) -> float:
    """Median µs of CPU per request of one process of a setup."""
    return median([x.extra[f"us_per_req:{server.name}"] for x in loads])
