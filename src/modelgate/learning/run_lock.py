"""The lock that keeps two replicas from running one model's learning loop at once: a file
``.lock`` in the model's runs folder (``<model>/.learning/``) naming the run that holds it.
Created exclusively; its modification time is its heartbeat (refreshed at each stage and
periodically while a run goes on), and a lock not refreshed for ``STALE_LOCK_S`` is a
crashed run's, taken over by an atomic rename so that of two replicas taking it over at
once one wins."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

__all__ = ["LOCK_FILE", "STALE_LOCK_S", "live", "refresh", "release", "take"]

LOCK_FILE = ".lock"
#: a lock not refreshed for this long is a crashed run's, and is taken over
STALE_LOCK_S = 600.0


def take(runs_dir: Path, run_id: str) -> bool:
    """Take the lock for ``run_id``; False while another run holds a fresh one."""
    path = runs_dir / LOCK_FILE
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _take_over(path, run_id):
                return False
            continue
        with os.fdopen(handle, "w") as file:
            file.write(run_id)
        return True
    return False


def refresh(runs_dir: Path, run_id: str) -> None:
    """Mark the run's lock alive (left alone when another run holds it)."""
    path = runs_dir / LOCK_FILE
    with contextlib.suppress(OSError):
        if path.read_text() == run_id:
            os.utime(path)


def release(runs_dir: Path, run_id: str) -> None:
    path = runs_dir / LOCK_FILE
    with contextlib.suppress(OSError):
        if path.read_text() == run_id:
            path.unlink()


def live(runs_dir: Path) -> str | None:
    """The run id a fresh lock names (a run going on, here or on another replica)."""
    path = runs_dir / LOCK_FILE
    try:
        if time.time() - path.stat().st_mtime > STALE_LOCK_S:
            return None
        return path.read_text()
    except OSError:
        return None


def _take_over(path: Path, run_id: str) -> bool:
    """Move a stale lock aside; False when it is fresh (or another replica moved it)."""
    try:
        seen = path.stat()
    except FileNotFoundError:
        return True  # released meanwhile: try to create it again
    if time.time() - seen.st_mtime <= STALE_LOCK_S:
        return False
    aside = path.with_name(f"{LOCK_FILE}.stale-{run_id}")
    try:
        os.rename(path, aside)  # atomic: one replica moves it
    except FileNotFoundError:
        return False  # another replica took it over first
    moved = aside.stat()
    if (moved.st_ino, moved.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns):
        # the lock was replaced (taken over, or refreshed) between the look and the rename:
        # it is someone's live lock, put it back unless a new one is there
        try:
            os.link(aside, path)  # fails, never replaces, when a new lock is there
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            with contextlib.suppress(OSError):
                os.rename(aside, path)
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True
