"""credit-risk over REST with applicants far from the training data against a typical applicant,
on the same server: an odd row must not be an amplifier (issue 11: within 10% of a typical
row's throughput). The out-of-distribution row is the one ``bench.inprocess anomaly``
measures (an income out of range and an unseen home_ownership); the demo model's anomaly
section flags it (action ``flag``: answered 200 with ``anomalous: true``)."""

from __future__ import annotations

from typing import Any

from bench.inprocess.anomaly import ANOMALY_ROWS
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
from bench.suites.measuring import alternate, authorization, describe, post
from bench.suites.servers import start_modelgate

TYPICAL, ODD = "typical row", "out-of-distribution row"
#: an odd row's throughput may be at most this much below a typical row's
TOLERANCE = 0.10


def flagged(answer: Any) -> bool:
    """Whether an OIP answer says the anomaly check flagged its input."""
    parameters = answer.get("parameters") or {}
    return parameters.get("anomalous") is True


def bench_ood(ctx: Ctx) -> Result:
    result = Result(
        "ood",
        "credit-risk over REST c=64: out-of-distribution rows vs typical rows, same server",
        ["body", "anomaly score", *COLUMNS],
    )
    bodies = {TYPICAL: credit_body(ANOMALY_ROWS[TYPICAL]), ODD: credit_body(ANOMALY_ROWS[ODD])}
    server: Server | None = None
    try:
        server = start_modelgate(ctx, "modelgate-ood", SERVER_CPU)
        scores: dict[str, str] = {}
        for name, body in bodies.items():
            answer = post(infer_url(server), body, authorization(server))
            if flagged(answer) != (name == ODD):
                raise RuntimeError(f"{name}: the anomaly check answered {answer.get('parameters')}")
            scores[name] = str((answer.get("parameters") or {}).get("anomaly_score", "-"))
        scripts = {
            name: script_for(server, ctx.work / f"ood-{index}.lua", body)
            for index, (name, body) in enumerate(bodies.items())
        }
        for name in bodies:  # warm-up, not recorded
            served_by(server, [server], scripts[name], 64, 2, LOAD_CPU)()
        rounds = {
            name: served_by(server, [server], scripts[name], 64, ctx.duration, LOAD_CPU)
            for name in bodies
        }
        runs = alternate(ctx, list(rounds.items()), describe)
    finally:
        if server is not None:
            server.stop()
    for name, loads in runs.items():
        result.rows.append([name, scores[name], *row_cells(loads)])
    typical, odd = summary(runs[TYPICAL]), summary(runs[ODD])
    ratio = odd["rps"] / typical["rps"]
    result.checks += [
        Check(
            "REST c=64 throughput, out-of-distribution / typical row",
            f"{ratio:.2f}x",
            f">= {1 - TOLERANCE:.2f}",
            ratio >= 1 - TOLERANCE,
        ),
        Check(
            "server CPU per request, out-of-distribution / typical row",
            f"{odd['cpu'] / typical['cpu']:.2f}x ({odd['cpu']:.0f} vs {typical['cpu']:.0f} µs)",
            "(info)",
            None,
        ),
    ]
    result.notes += [
        f"One modelgate server pinned to CPU {SERVER_CPU}, both models as `make run` builds "
        "them (credit-risk's anomaly section: action flag, threshold 0.5); wrk (`-t1 -c64`) "
        f"pinned to CPU {LOAD_CPU}; {ctx.rounds} alternating rounds of {ctx.duration:g} s "
        "after a 2 s warm-up of each body.",
        f"Bodies (`bench/inprocess/anomaly.py`): typical {ANOMALY_ROWS[TYPICAL]}; "
        f"out of distribution {ANOMALY_ROWS[ODD]} (annual_income 9e9, home_ownership 7, "
        "a category the reference never saw). Each answer's anomaly parameters are checked "
        "before the load: the odd row is flagged, the typical row is not.",
    ]
    return result
