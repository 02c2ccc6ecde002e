"""Holding a server to a fraction of a core, so that a Python load generator on the other
core can offer it four times its capacity.

A CPU cgroup with a CFS quota: cgroup v1 (``/sys/fs/cgroup/cpu``, ``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``) or v2 (``cpu.max``), whichever this machine mounts writable. The period
is 10 ms rather than the kernel's 100 ms default: a throttled server then waits at most
~9 ms for its next slice, not ~90 ms, so an idle server's latency stays near normal and the
cap shows up as capacity, not as a fixed stall. Every process of the server's tree is moved
in after it is ready (start-up runs at full speed) and moved back before the group goes.
Where neither is writable, ``hold`` yields None and the server keeps its whole core.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

from bench.sysinfo import descendants

__all__ = ["PERIOD_US", "hold", "quota_us"]

PERIOD_US = 10_000
_MIN_QUOTA_US = 1000
_V1 = Path("/sys/fs/cgroup/cpu")
_V2 = Path("/sys/fs/cgroup")


def quota_us(share: float) -> tuple[int, int]:
    """(quota, period) in µs for ``share`` of a core: a 10 ms period, longer where the quota
    would fall under the kernel's minimum of 1 ms (a share under 0.1)."""
    period = max(PERIOD_US, math.ceil(_MIN_QUOTA_US / share))
    return max(_MIN_QUOTA_US, round(share * period)), period


def _group(name: str, share: float) -> tuple[Path, Path] | None:
    """Create the group; returns (group, its parent) or None where that is not allowed."""
    quota, period = quota_us(share)
    if (_V1 / "cpu.cfs_quota_us").exists():
        parent, limits = _V1, {"cpu.cfs_period_us": str(period), "cpu.cfs_quota_us": str(quota)}
    elif (_V2 / "cgroup.controllers").exists():
        parent, limits = _V2, {"cpu.max": f"{quota} {period}"}
    else:
        return None
    group = parent / name
    try:
        group.mkdir()
        for file, value in limits.items():
            (group / file).write_text(value)
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return group, parent


@contextlib.contextmanager
def hold(pid: int, share: float, tag: str) -> Iterator[str | None]:
    """Hold ``pid`` and its descendants to ``share`` of one core while the block runs; yields
    a description of how (None: not held)."""
    made = _group(f"modelgate-flood-{os.getpid()}-{tag}", share)
    if made is None:
        yield None
        return
    group, parent = made
    pids = [pid, *descendants(pid)]
    try:
        for each in pids:
            with contextlib.suppress(ProcessLookupError):  # a child that has just exited
                (group / "cgroup.procs").write_text(str(each))
        version = "v1 cpu.cfs_quota_us" if parent == _V1 else "v2 cpu.max"
        quota, period = quota_us(share)
        yield f"cgroup {version}: {quota} µs every {period} µs ({share:g} of a core)"
    finally:
        for each in pids:
            with contextlib.suppress(OSError):
                (parent / "cgroup.procs").write_text(str(each))
        with contextlib.suppress(OSError):
            group.rmdir()
