"""One test process at a time makes a thing under ``build/`` (a peer's virtual environment,
a binary from a Debian package): the suite runs in several pytest-xdist workers, and two of
them may ask for the same thing at once. The lock is an advisory ``flock`` on
``<where>/.locks/<name>.lock`` (``build/`` unless the thing lives elsewhere), released when
its holder exits, however it exits."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

__all__ = ["build_lock"]


@contextlib.contextmanager
def build_lock(name: str, where: Path | None = None) -> Iterator[None]:
    """Hold ``name``'s lock while the block makes (or finds made) what it names."""
    path = (where or ROOT / "build") / ".locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
