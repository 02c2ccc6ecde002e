"""``python -m bench``: run the benchmarks, print Rich tables, optionally update the doc.

.venv/bin/python -m bench --models build/models                 # all (make bench)
.venv/bin/python -m bench --only rest --only grpc --duration 5
.venv/bin/python -m bench --write-doc                           # also docs/benchmarks.md
.venv/bin/python -m bench --only rest --auth tenant             # with a tenant's key
.venv/bin/python -m bench --only rest --auth tenant --redis redis://127.0.0.1:6379/0
.venv/bin/python -m bench --only steps --write-doc              # the per-step cost table
.venv/bin/python -m bench --only ood --only redis --only gateway --only rss --duration 2

Issue 11's added rows (ood, redis, gateway, rss) carry a tenant's key unless --auth says
otherwise; redis and gateway need a Redis: --redis URL, else the local one
(redis://127.0.0.1:6379/0). rss loads each server for 6 x --duration seconds per run.
`python -m bench.gpu` (CUDA vs CPU, in-process) runs apart, on a machine with a GPU.
.venv/bin/python -m bench --only flood                          # issue 15's table (opt-in)
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from rich.console import Console

from bench import loadgen, procs, redis_scratch, tenant
from bench.flood.run import TITLE as FLOOD_TITLE
from bench.flood.run import bench_flood
from bench.report import print_result, print_summary, update_doc
from bench.suites import SUITES, TENANT_BY_DEFAULT, Ctx, Result, suite_context
from bench.sysinfo import environment

#: suites run only when named with --only: the flood needs root (a CPU cgroup), the
#: machine's PostgreSQL and about 4 minutes, and brings its own keys (bench/flood/)
OPT_IN: dict[str, tuple[str, Callable[[Ctx], Result]]] = {"flood": (FLOOD_TITLE, bench_flood)}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=procs.ROOT / "build/models",
        help="model repository with credit-risk and all-MiniLM-L6-v2",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[*SUITES, *OPT_IN],
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(SUITES)}; "
        f"only when named: {', '.join(OPT_IN)}",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds per measured round at c=64 (default 10)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per comparison (default 3)"
    )
    parser.add_argument(
        "--write-doc",
        nargs="?",
        const=procs.ROOT / "docs/benchmarks.md",
        type=Path,
        metavar="PATH",
        help="update the generated sections of docs/benchmarks.md (or PATH)",
    )
    parser.add_argument(
        "--auth",
        choices=tenant.AUTH_MODES,
        help="the key modelgate's requests carry: the bootstrap admin key (no plan) or a "
        "tenant's key on a plan with rate limits and quotas that never refuse; default: admin, "
        f"tenant for {', '.join(sorted(TENANT_BY_DEFAULT))}",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="modelgate keeps rate limits, quotas and abuse strikes in this Redis, under a "
        "key prefix of its own that the run removes at the end; without it, only the redis "
        "and gateway rows use one, the local Redis",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds in all to wait for other jobs to leave the CPUs before rounds (default 60)",
    )
    return parser.parse_args(argv)


_AUTH = {
    "admin": "bootstrap admin key (MODELGATE_ADMIN_KEY: no plan, no rate limit, no quota)",
    "tenant": "key of a tenant on a plan with rate limits and quotas that never refuse "
    "(bench/tenant.py)",
}


def _auth_note(auth: str, redis: str | None, source: str) -> str:
    where = f"in Redis ({redis}, a key prefix of the run's own)" if redis else "in memory"
    return (
        f"modelgate {source}. Every modelgate request carries the {_AUTH[auth]}; "
        f"rate limits and quotas {where}."
    )


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    console = Console()
    if not console.is_terminal:  # make, tee, CI: wide enough for the tables
        console = Console(width=160)
    if args.duration <= 0 or args.rounds <= 0:
        console.print("[red]--duration and --rounds must be positive[/]")
        return 2
    if not (args.models / "credit-risk").is_dir():
        console.print(f"[red]no demo models in {args.models}[/] (run `make models`)")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    loadgen.ensure_tools()
    names = args.only or list(SUITES)
    names = list(dict.fromkeys(names))
    env = environment()
    console.print(f"[bold]modelgate benchmarks[/] {env['date']} — {env['machine']}")
    console.print(f"[dim]{env['versions']}[/]")
    carried = (
        _AUTH[args.auth]
        if args.auth
        else _AUTH["admin"] + " or, in " + ", ".join(sorted(TENANT_BY_DEFAULT)) + ", a tenant's"
    )
    console.print(f"[dim]modelgate {env['modelgate']}; requests carry the {carried}[/]")
    console.print(
        f"[dim]load average {env['load average at start']}; {args.rounds} rounds x "
        f"{args.duration:g} s[/]"
    )
    results: list[Result] = []
    prefix = redis_scratch.unique_prefix()
    redis_used = {args.redis} if args.redis else set()
    with tempfile.TemporaryDirectory(prefix="modelgate-bench-") as tmp:
        ctx = Ctx(
            models=args.models.resolve(),
            duration=args.duration,
            rounds=args.rounds,
            work=Path(tmp),
            console=console,
            quiet_budget=[args.quiet_wait],
            auth=args.auth or "admin",
            redis_url=args.redis,
            redis_prefix=prefix,
        )
        try:
            for name in names:
                title, run = {**SUITES, **OPT_IN}[name]
                console.rule(f"[bold]{name}[/]: {title}")
                start = time.monotonic()
                own = suite_context(ctx, name, args.auth)
                redis_used |= {own.redis_url} if own.redis_url else set()
                try:
                    result = run(own)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # one broken benchmark must not stop the others
                    result = Result(name, title, [], error=f"{type(exc).__name__}: {exc}")
                result.seconds = time.monotonic() - start
                if name not in ("raw", "steps", *OPT_IN):  # these say which keys they use
                    result.notes.append(_auth_note(own.auth, own.redis_url, env["modelgate"]))
                results.append(result)
                print_result(console, result)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
        finally:
            procs.stop_all()
            for url in sorted(redis_used):
                try:
                    removed = redis_scratch.remove_prefix(url, prefix)
                except Exception as exc:  # an unreachable Redis already failed its suites
                    console.print(f"[yellow]could not clean {prefix} in {url}: {exc}[/]")
                else:
                    console.print(f"[dim]removed {removed} Redis keys under {prefix} in {url}[/]")
    print_summary(console, results)
    if args.write_doc and results:
        command = ".venv/bin/python -m bench" + (
            "".join(f" --only {n}" for n in args.only) if args.only else ""
        )
        if args.duration != 10.0:
            command += f" --duration {args.duration:g}"
        if args.rounds != 3:
            command += f" --rounds {args.rounds}"
        if args.auth:
            command += f" --auth {args.auth}"
        if args.redis:
            command += f" --redis {args.redis}"
        update_doc(args.write_doc, results, env, command)
        console.print(f"wrote {args.write_doc}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
