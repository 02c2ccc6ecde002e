"""Virtual environments of their own for the programs the e2e tests run beside modelgate
(Triton through PyTriton, MLServer): they pin versions modelgate's environment does not
share. Each lives in ``build/<name>``, made on first use from a requirements file of exact
versions (pip needs the package index then, the project's usual one) and reused after,
as ``build/kserve-venv`` is (tests/e2e/test_kserve_sdk.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

__all__ = ["peer_python"]


def _pins(requirements: Path) -> set[str]:
    return {
        line.strip()
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def peer_python(name: str, requirements: Path) -> Path:
    """The interpreter of ``build/<name>``, with exactly ``requirements`` installed (made
    or remade when a pin is missing); the test fails when pip cannot make it."""
    venv = ROOT / "build" / name
    python = venv / "bin" / "python"
    if python.exists():
        frozen = subprocess.run(
            [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=False
        )
        if _pins(requirements) <= set(frozen.stdout.splitlines()):
            return python
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            pytest.fail(f"cannot make {venv}: {' '.join(step)}\n{done.stderr[-3000:]}")
    return python
