"""Command line for the demo models: `python -m modelgate.demo build --out DIR [--force]`.

Run by `make models` in the build environment (torch, skl2onnx, sentence-transformers), never
by the server, which only reads the repository this writes.
"""

from __future__ import annotations

import argparse
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
    return parser


def _progress(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the command; returns the process exit status."""
    arguments = _parser().parse_args(argv)
    from modelgate.demo.build import build_repository  # heavy imports only once arguments parse

    build_repository(arguments.out, force=arguments.force, progress=_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
