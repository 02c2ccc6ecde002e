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
from bench.flood import ROWS, run_flood
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
        help="the overload row holds its servers to this share of a core (default 0.1)",
    )
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def markdown(rows: list[tuple[str, str, str, bool | None]]) -> str:
    """The table as Markdown: row, measured, target, PASS/MISS."""
    lines = ["| row | measured | target | result |", "| --- | --- | --- | --- |"]
    for title, measured, target, passed in rows:
        cells = [c.replace("|", "\\|") for c in (title, measured, target, _MD_STATUS[passed])]
        lines.append("| " + " | ".join(cells) + " |")
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
            rows = run_flood(ctx, args.only, args.server_share)
        finally:
            procs.stop_all()
    result = as_result(rows)
    result.seconds = time.monotonic() - start
    print_result(console, result)
    print_summary(console, [result])
    console.print(
        markdown([(r.title, r.measured, r.target, r.passed) for r in rows]), soft_wrap=True
    )
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
