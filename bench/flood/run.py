"""The flood run: which rows, on which servers, in what order, and the rows as a suite
:class:`~bench.suites.Result`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from bench import procs
from bench.flood.fairness import fairness
from bench.flood.key_cache import key_cache
from bench.flood.keys import ROOMY, key_for
from bench.flood.measure import HOST, Row
from bench.flood.outage import outage
from bench.flood.overload import TARGETS_MS, overload
from bench.flood.refusal_cost import refusal_cost
from bench.suites.context import LOAD_CPU, SERVER_CPU, Check, Ctx, Result
from bench.suites.servers import start_modelgate

__all__ = ["ROWS", "TITLE", "as_result", "bench_flood", "run_flood"]

ROWS = ("fairness", "refusal-cost", "overload", "key-cache", "outage")
TITLE = "Issue 15: fair share, refusal cost, overload, key cache, outage"
#: the rows that share one server with default settings (and a 5 s key cache)
_SHARED = {"fairness", "refusal-cost", "key-cache"}


@contextlib.contextmanager
def _on_load_cpu() -> Iterator[None]:
    """This process (the open-loop generator) on the load generators' CPU while it runs."""
    before = os.sched_getaffinity(0)
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run_flood(
    ctx: Ctx,
    only: list[str] | None = None,
    share: float = 0.1,
    targets_ms: tuple[float, ...] = TARGETS_MS,
    shed_env: dict[str, str] | None = None,
) -> list[Row]:
    chosen = [r for r in ROWS if not only or r in only]
    rows: list[Row] = []
    with _on_load_cpu(), procs.servers() as started:
        if _SHARED & set(chosen):
            env = {"MODELGATE_KEY_CACHE_SECONDS": "5"}
            server = start_modelgate(ctx, "flood", SERVER_CPU, env=env)
            started.append(server)
            roomy = key_for(f"http://{HOST}:{server.http_port}", ROOMY, "flood-roomy")
        for name in chosen:
            ctx.console.rule(f"[dim]{name}[/]")
            if name == "fairness":
                rows.append(fairness(ctx, server))
            elif name == "refusal-cost":
                # a refusal's own cost: back-pressure off, or a held flood would measure the
                # idle server per answer; the default server shows what holding saves
                env = {"MODELGATE_REFUSAL_BURST": "0"}
                unheld = start_modelgate(ctx, "flood-unheld", SERVER_CPU, env=env)
                started.append(unheld)
                unheld_roomy = key_for(f"http://{HOST}:{unheld.http_port}", ROOMY, "flood-roomy")
                rows.append(refusal_cost(ctx, unheld, unheld_roomy, held=server))
            elif name == "overload":
                rows += overload(ctx, share, targets_ms, shed_env)
            elif name == "key-cache":
                rows.append(key_cache(server, roomy))
            elif name == "outage":
                rows.append(outage(ctx))
            for row in rows[-len(targets_ms) if name == "overload" else -1 :]:
                ctx.log(f"{row.key}: {row.measured}")
    return rows


def as_result(rows: list[Row]) -> Result:
    """The rows as a suite result: the figures behind each as the table, each row a check."""
    result = Result("flood", TITLE, ["row", "what", "value"])
    for row in rows:
        result.rows += [[row.key, what, value] for what, value in row.details]
        result.checks.append(Check(row.title, row.measured, row.target, row.passed))
    result.notes.append(
        "modelgate servers pinned to CPU 0 with access control on and tenant keys; the "
        "open-loop generator (bench/openloop.py) and wrk on CPU 1 "
        "(`python -m bench.flood`, bench/flood/)."
    )
    return result


def bench_flood(ctx: Ctx) -> Result:
    """The flood as ``python -m bench --only flood`` runs it: every row, defaults."""
    return as_result(run_flood(ctx))
