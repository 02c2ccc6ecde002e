"""Command line for the demo models: `python -m modelgate.demo build --out DIR [--force]`,
and `python -m modelgate.demo traffic --key KEY [--rows N] [--shifted]`.

`build` is run by `make models` in the build environment (torch, skl2onnx,
sentence-transformers), never by the server, which only reads the repository it writes.
`traffic` is a client of a running server (numpy and httpx, the serving environment): demo
applicants for credit-risk and their outcomes as feedback, the learning loop's input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modelgate.demo", description="Build the demo model repository."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build credit-risk and all-MiniLM-L6-v2")
    build.add_argument("--out", type=Path, required=True, help="model repository folder")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    traffic = commands.add_parser(
        "traffic", help="send credit-risk applicants to a running server, then their outcomes"
    )
    traffic.add_argument(
        "--url",
        default=os.environ.get("MODELGATE_URL", "http://localhost:8000"),
        help="the server (default: $MODELGATE_URL, else http://localhost:8000)",
    )
    traffic.add_argument(
        "--key", default=os.environ.get("KEY"), help="a key with the infer scope (default: $KEY)"
    )
    traffic.add_argument("--rows", type=int, default=600, help="applicants to send (1-100000)")
    traffic.add_argument("--seed", type=int, default=1, help="the generator's seed")
    traffic.add_argument(
        "--shifted",
        action="store_true",
        help="outcomes the served versions never learned: the richer half defaults",
    )
    return parser


def _progress(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the command; returns the process exit status."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.command == "traffic":
        return _traffic(parser, arguments)
    from modelgate.demo.build import build_repository  # heavy imports only once arguments parse

    build_repository(arguments.out, force=arguments.force, progress=_progress)
    return 0


def _traffic(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> int:
    if not arguments.key:
        parser.error("traffic needs --key (or $KEY): a key with the infer scope")
    if not 1 <= arguments.rows <= 100_000:
        parser.error("--rows must be 1 to 100000")
    import httpx

    from modelgate.demo.traffic import send_traffic

    try:
        sent = send_traffic(
            arguments.url, arguments.key, rows=arguments.rows, seed=arguments.seed,
            shifted=arguments.shifted,
        )  # fmt: skip
    except httpx.HTTPStatusError as exc:
        answer = exc.response
        print(
            f"{answer.request.url.path}: {answer.status_code} {answer.text[:500]}", file=sys.stderr
        )
        return 1
    except httpx.HTTPError as exc:
        print(f"{arguments.url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    kind = "shifted outcomes" if arguments.shifted else "outcomes"
    print(
        f"credit-risk: {sent.rows} applicants in {sent.requests} requests, {sent.labelled} "
        f"{kind} sent back ({sent.defaults} defaults)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
