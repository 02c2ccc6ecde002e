"""Row 2: the server's CPU per refused request against per served inference, end to end:
the CPU time of the server's process tree (``/proc``) over a wrk run (32 connections) divided
by the answers it gave. Refused: a tenant on a plan that admits one request in 1000 s (429
from the second on); served: a tenant on a plan no run reaches. Alternating rounds (served,
refused, refused, served), figures summed per kind, on a server with back-pressure off
(``MODELGATE_REFUSAL_BURST=0``): with it on, a flooding connection is answered about once a
second and the CPU per answer would be the idle server's. What back-pressure saves is shown
beside it: the same refused flood's CPU per second on ``held``, a server with the defaults.
And the floor, in the same rounds: bench/floor_http.py, a uvloop protocol with httptools
that answers every request with bytes built once and does nothing else, under the same wrk
load: what one read and one write cost here before any server's own work (the least a
refusal by any Python server on uvloop can cost). Then the same three with a new connection
for every request (bench/flood/new_connections.py): what a flood of many clients, or of one
whose kept connections are all busy, costs per answer, the connection's accept and close
included (a new connection's first request goes to the app: no caller is known on it)."""

from __future__ import annotations

from bench import loadgen
from bench.flood.keys import REFUSING, ROOMY, key_for
from bench.flood.measure import HOST, Row, infer_request, ratio_text, wait_idle
from bench.flood.new_connections import cpu_per_answer
from bench.procs import Server
from bench.suites.context import LOAD_CPU, SERVER_CPU, Ctx
from bench.suites.measuring import post
from bench.suites.servers import start_floor
from bench.sysinfo import tree_cpu
from bench.workloads import credit_json

SECONDS = 3.0
CONNECTIONS = 32


def refusal_cost(ctx: Ctx, server: Server, served_key: str, held: Server | None = None) -> Row:
    row = Row(
        "refusal-cost",
        "server CPU per refused request / per served inference (end to end, /proc)",
        "<= 0.1x",
    )
    base = f"http://{HOST}:{server.http_port}"
    url = f"{base}/v2/models/credit-risk/infer"
    refused_key = key_for(base, REFUSING, "flood-refused")
    post(url, credit_json(), refused_key)  # the plan's one request: the rest are refused
    scripts = {
        kind: loadgen.lua_script(ctx.work / f"cost-{kind}.lua", [credit_json()], authorization=key)
        for kind, key in (("served", served_key), ("refused", refused_key))
    }
    totals = {kind: [0.0, 0, 0] for kind in scripts}  # CPU s, answers, non-2xx
    floor = start_floor(ctx, SERVER_CPU)
    floor_url = f"http://{HOST}:{floor.http_port}/v2/models/credit-risk/infer"
    floor_totals = [0.0, 0]
    try:
        wait_idle(server)
        for kind in ("served", "refused", "floor", "refused", "served", "floor"):
            if kind == "floor":
                before = tree_cpu(floor.pid)
                load = loadgen.wrk(
                    floor_url, scripts["served"], CONNECTIONS, SECONDS, cpus=LOAD_CPU
                )
                floor_totals[0] += tree_cpu(floor.pid) - before
                floor_totals[1] += load.requests
                continue
            before = tree_cpu(server.pid)
            load = loadgen.wrk(url, scripts[kind], CONNECTIONS, SECONDS, cpus=LOAD_CPU)
            totals[kind][0] += tree_cpu(server.pid) - before
            totals[kind][1] += load.requests
            totals[kind][2] += load.errors
        fresh = {
            "served": cpu_per_answer(server, HOST, infer_request(server, served_key)),
            "refused": cpu_per_answer(server, HOST, infer_request(server, refused_key)),
            "floor": cpu_per_answer(floor, HOST, infer_request(floor, None)),
        }
    finally:
        floor.stop()
    per = {kind: cpu / answers if answers else None for kind, (cpu, answers, _) in totals.items()}
    served, refused = per["served"], per["refused"]
    ratio = refused / served if served and refused else None
    row.measured = (
        f"refused {_us(refused)}, served {_us(served)} of CPU per answer: {ratio_text(ratio)}"
    )
    row.passed = ratio is not None and ratio <= 0.1
    for kind, (cpu, answers, errors) in totals.items():
        row.note(
            f"{kind} ({ROOMY['name'] if kind == 'served' else REFUSING['name']} plan)",
            f"{answers:,} answers ({errors:,} non-2xx) in {2 * SECONDS:g} s, "
            f"{cpu:.2f} s server CPU",
        )
    floor_per = floor_totals[0] / floor_totals[1] if floor_totals[1] else None
    row.note(
        "floor: canned answers (bench/floor_http.py), same load",
        f"{floor_totals[1]:,} answers in {2 * SECONDS:g} s, {floor_totals[0]:.2f} s CPU: "
        f"{_us(floor_per)} per answer, "
        f"{ratio_text(floor_per / served if floor_per and served else None)} of a served one",
    )
    row.note(
        "a new connection for each request (bench/flood/new_connections.py): CPU per answer",
        ", ".join(
            f"{kind} {_us(each.per_answer_s)} ({each.answers:,} answers: "
            + ", ".join(f"{status}: {n:,}" for status, n in sorted(each.statuses.items()))
            + ")"
            for kind, each in fresh.items()
        ),
    )
    if held is not None:
        row.note("refused flood, back-pressure on (defaults)", _held_flood(ctx, held))
    if totals["refused"][2] < totals["refused"][1] or totals["served"][2]:
        row.passed = False
        row.note("warning", "the refused load was not all refused, or the served not all served")
    return row


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.0f} µs"


def _held_flood(ctx: Ctx, server: Server) -> str:
    """The refused flood against a server with back-pressure on: its answers and the
    server's CPU, as a share of a core."""
    base = f"http://{HOST}:{server.http_port}"
    url = f"{base}/v2/models/credit-risk/infer"
    key = key_for(base, REFUSING, "flood-refused-held")
    post(url, credit_json(), key)
    script = loadgen.lua_script(ctx.work / "cost-held.lua", [credit_json()], authorization=key)
    wait_idle(server)
    before = tree_cpu(server.pid)
    load = loadgen.wrk(url, script, CONNECTIONS, 2 * SECONDS, cpus=LOAD_CPU)
    cpu = tree_cpu(server.pid) - before
    return (
        f"{load.requests:,} answers in {2 * SECONDS:g} s, {cpu:.2f} s server CPU: "
        f"{cpu / (2 * SECONDS):.2f} of a core"
    )
