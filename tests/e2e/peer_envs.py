"""Virtual environments of their own for the programs the e2e tests run beside modelgate
(Triton through PyTriton, MLServer, the KServe SDK): they pin versions modelgate's
environment does not share.

Each is made on first use from a requirements file of exact versions (pip needs the package
index then, the project's usual one) and reused after, by every checkout on the machine:
it lives in the user's cache (``$MODELGATE_TEST_CACHE``, else ``$XDG_CACHE_HOME/modelgate``
or ``~/.cache/modelgate``) under ``<name>-<digest>``, the digest that of the requirements
file and the Python version, as pre-commit and tox keep theirs. A fresh clone then does not
spend minutes unpacking Triton's server again; a changed requirements file gets an
environment of its own, and the older ones of that name are removed once it is made."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.build_lock import build_lock

__all__ = ["cache_dir", "peer_python"]


def cache_dir() -> Path:
    """Where the tests keep what outlives a checkout (the peers' environments)."""
    explicit = os.environ.get("MODELGATE_TEST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelgate"


def _pins(requirements: Path) -> set[str]:
    return {
        line.strip()
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def peer_python(name: str, requirements: Path) -> Path:
    """The interpreter of ``name``'s environment, with exactly ``requirements`` installed
    (made or remade when a pin is missing); the test fails when pip cannot make it. One
    process at a time makes it (the suite runs in several workers)."""
    digest = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:12]
    venv = cache_dir() / "peer-envs" / f"{name}-{digest}"
    with build_lock(name, venv.parent):
        python = _made(venv, requirements)
        for older in venv.parent.glob(f"{name}-*"):
            if older != venv:
                shutil.rmtree(older, ignore_errors=True)
    return python


def _made(venv: Path, requirements: Path) -> Path:
    python = venv / "bin" / "python"
    if python.exists():
        frozen = subprocess.run(
            [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=False
        )
        if _pins(requirements) <= set(frozen.stdout.splitlines()):
            return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            pytest.fail(f"cannot make {venv}: {' '.join(step)}\n{done.stderr[-3000:]}")
    return python
