"""6. The cost of each step of a credit-risk REST inference, in-process (issue 11): the table of
``bench.step_costs`` from ``python -m bench.inprocess steps`` in a fresh process on one CPU."""

from __future__ import annotations

import json
import sys

from bench.procs import pinned, run_bounded
from bench.step_costs import COLUMNS, OFF_LIMIT_US, costliest_off, costs_from, table_rows
from bench.suites.context import SERVER_CPU, Check, Ctx, Result
from bench.suites.measuring import wait_quiet

#: seconds of each timed stream; the ablation's runs last a quarter of it
SECONDS = 1.5


def bench_steps(ctx: Ctx) -> Result:
    result = Result(
        "steps",
        "credit-risk over REST, in-process: CPU µs per request of each step",
        COLUMNS,
    )
    wait_quiet(ctx)
    argv = [sys.executable, "-m", "bench.inprocess", "steps", str(ctx.models), f"{SECONDS:g}"]
    if ctx.redis_url is not None:
        argv += ["--redis", ctx.redis_url]
    out = run_bounded(pinned(SERVER_CPU, argv), timeout=600).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    costs, control = costs_from(figures)
    result.rows = table_rows(costs, figures["total"], figures["timed total"], control)
    costliest = costliest_off(costs)
    if costliest is not None:
        worst, name = costliest
        result.checks.append(
            Check(
                "a switched-off feature's step, on the path",
                f"at most {worst:.2f} µs ({name})",
                f"<= {OFF_LIMIT_US} µs",
                worst <= OFF_LIMIT_US,
            )
        )
    biggest = sorted(costs, key=lambda c: c.on_us, reverse=True)[:3]
    result.checks.append(
        Check(
            "the biggest steps",
            ", ".join(f"{c.spec.name} {c.on_us:.1f} µs" for c in biggest),
            f"of {figures['total']:.1f} µs",
            None,
        )
    )
    where = f"in Redis ({ctx.redis_url})" if ctx.redis_url else "in memory"
    result.notes += [
        f"`python -m bench.inprocess steps MODELS {SECONDS:g}` pinned to CPU {SERVER_CPU}: "
        "credit-risk as `make run` builds it (its anomaly and feedback sections on), the "
        "components started as in a server (the recorders flush in the background, request "
        "lines are written by the log's thread, to /dev/null), every request with a tenant "
        f"key whose plan has rate limits, a concurrency cap and daily quotas "
        f"(`bench/tenant.py`), limits and quotas {where}; one request at a time.",
        "All figures are CPU time per request, not wall time, so that another process on "
        "the CPU counts little. **on the path**: the loop thread's CPU inside the step's "
        "calls (a timer around each; the timer's own share, "
        f"{figures['timer window ns']:.0f} ns a call, taken off), median of 3 runs; an "
        "awaited step (auth, admission, cache lookup, run) is timed in the stretches it runs, "
        "not while it waits, and the run also in the batcher's flush callback, which runs the "
        "request it queues as a probe (one in 32). "
        "**unattributed**: the total less the steps; work a step leaves to a background "
        "task or thread, and the loop's turns, count here. **on - off**: the process's CPU "
        "per request with every feature on less the same with this one switched off, "
        "alternating pairs, median (± half the range) of 5 rounds; `~0` where it is no "
        "larger than the control "
        "pair's (nothing switched off). **off**: the step's CPU on the path with every "
        "switch off at once (0.00: the step is not called; its caller tests for None).",
        f"With the timers, CPU per request with every switch off at once: "
        f"{figures['timed total, off']:.1f} µs, against {figures['timed total']:.1f} µs with "
        f"every feature on. Wall time per request of the plain stream: "
        f"{figures['total wall']:.1f} µs (CPU {figures['total']:.1f} µs).",
        "A switch is what its setting leaves unset, set on the built objects "
        "(`bench/inprocess/steps.py`). Metrics cannot be switched off: `no observer` drops the "
        "per-inference series only; the HTTP answer counter stays. Auth off also leaves "
        "admission no tenant to limit. credit-risk has no cache section: its cache row is "
        "the check that finds none, on and off alike.",
    ]
    return result
