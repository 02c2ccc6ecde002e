"""Installing a built model into the repository all at once.

A model is written into a hidden temporary folder next to its destination and renamed into
place only when complete, so a crash or Ctrl-C never leaves a half-built model that the server
would try to load. Leftovers of an interrupted build are hidden folders, which the repository
scanner ignores, and are removed by the next build.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STAGING_PREFIX = ".staging-"
RETIRED_PREFIX = ".retired-"


def remove_leftovers(repository: Path) -> None:
    """Delete staging and retired folders left by an interrupted earlier build."""
    if not repository.is_dir():
        return
    for entry in repository.iterdir():
        if entry.is_dir() and entry.name.startswith((STAGING_PREFIX, RETIRED_PREFIX)):
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def staged_model(repository: Path, name: str) -> Iterator[Path]:
    """Yield an empty folder to build model `name` in; on success, swap it in for the old one."""
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=repository))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.chmod(0o755)  # mkdtemp creates 0700; the server may run as another user
    destination = repository / name
    if destination.exists():
        retired = Path(tempfile.mkdtemp(prefix=f"{RETIRED_PREFIX}{name}-", dir=repository))
        destination.rename(retired / name)
        staging.rename(destination)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(destination)
