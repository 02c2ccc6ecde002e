"""``python -m bench.flood``: issue 15's table in one run (see bench/flood/__init__.py)."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from rich.console import Console

from bench import flood, loadgen, procs
from bench.flood import ROWS, Row, run_flood
from bench.flood.overload import TARGETS_MS
from bench.flood.run import as_result
from bench.report import print_result, print_summary
from bench.suites.context import Ctx
from bench.sysinfo import environment

_MD_STATUS = {True: "PASS", False: "MISS", None: "info"}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.flood",
        description=flood.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=procs.ROOT / "build/models",
        help="model repository with credit-risk (default build/models)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=ROWS,
        metavar="ROW",
        help=f"repeatable: {', '.join(ROWS)}",
    )
    parser.add_argument(
        "--server-share",
        type=float,
        default=0.1,
        help="the overload row holds its servers to this share of a core with a CPU cgroup "
        "(needs root; default 0.1), so that this process can offer 4x their capacity",
    )
    parser.add_argument(
        "--shed-targets",
        default=",".join(f"{t:g}" for t in TARGETS_MS),
        help="the overload row's variants: MODELGATE_SHED_QUEUE_TARGET_MS values, "
        "comma-separated (0: off; default %(default)s)",
    )
    parser.add_argument(
        "--shed-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="repeatable: more settings for the overload row's servers "
        "(e.g. MODELGATE_SHED_QUEUE_MAX_WAIT_MS=500)",
    )
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def markdown(rows: list[Row]) -> str:
    """The table as Markdown (row, measured, target, PASS/MISS), then the figures behind
    each row (row, what, value)."""
    lines = [_md_row(["row", "measured", "target", "result"]), _md_row(["---"] * 4)]
    lines += [_md_row([r.title, r.measured, r.target, _MD_STATUS[r.passed]]) for r in rows]
    lines += ["", _md_row(["row", "what", "value"]), _md_row(["---"] * 3)]
    lines += [_md_row([r.key, what, value]) for r in rows for what, value in r.details]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if not (args.models / "credit-risk").is_dir():
        console.print(f"[red]no demo models in {args.models}[/] (run `make models`)")
        return 2
    if not 0 < args.server_share <= 1:
        console.print("[red]--server-share must be in (0, 1][/]")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    loadgen.ensure_tools()
    env = environment()
    console.print(
        f"[bold]modelgate flood[/] {env['date']} — {env['machine']}; modelgate {env['modelgate']}"
    )
    console.print(f"[dim]load average {env['load average at start']}[/]")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modelgate-flood-") as tmp:
        ctx = Ctx(
            models=args.models.resolve(), duration=0, rounds=1, work=Path(tmp), console=console
        )
        try:
            targets = tuple(float(t) for t in args.shed_targets.split(","))
            shed_env = dict(item.split("=", 1) for item in args.shed_env)
            rows = run_flood(ctx, args.only, args.server_share, targets, shed_env)
        finally:
            procs.stop_all()
    result = as_result(rows)
    result.seconds = time.monotonic() - start
    print_result(console, result)
    print_summary(console, [result])
    command = ".venv/bin/python -m bench.flood" + "".join(f" --only {r}" for r in args.only or [])
    if args.server_share != 0.1:
        command += f" --server-share {args.server_share:g}"
    if args.shed_targets != ",".join(f"{t:g}" for t in TARGETS_MS):
        command += f" --shed-targets {args.shed_targets}"
    command += "".join(f" --shed-env {item}" for item in args.shed_env)
    console.print(
        f"`{command}` — {env['date']}, {result.seconds:.0f} s, load average at start "
        f"{env['load average at start']}.\n",
        soft_wrap=True,
        markup=False,
    )
    console.print(markdown(rows), soft_wrap=True, markup=False)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
