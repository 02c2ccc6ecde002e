"""What /proc says: CPU time of a process tree, worker processes, who holds which connection,
and the machine and versions a run happened on."""

from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from bench.loadgen import tool_version

__all__ = ["children", "cpu_seconds", "environment", "established_per_process", "tree_cpu"]

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces; everything after its ')' is split safely
    return [str(pid), "comm", *text[text.rindex(")") + 2 :].split()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads), in seconds."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / _TICK


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[3]) == pid:
                found.append(int(entry))
    return sorted(found)


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in [pid, *descendants(pid)])


def worker_pids(pid: int) -> list[int]:
    """modelgate's ``--workers N`` processes (multiprocessing spawn children, not its tracker)."""
    workers = []
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(child)
    return workers or [pid]


def established_per_process(pids: list[int], port: int) -> dict[int, int]:
    """How many ESTABLISHED TCP connections on local ``port`` each process holds."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    counts: dict[int, int] = {}
    for pid in pids:
        held = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held += 1
        except OSError:
            pass
        counts[pid] = held
    return counts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def modelgate_source() -> str:
    """Which modelgate the servers run: its folder, and the commit of that folder's work tree
    (with PYTHONPATH=<worktree>/src, an older commit than the benchmark's own)."""
    spec = importlib.util.find_spec("modelgate")
    if spec is None or spec.origin is None:
        return "not found"
    folder = Path(spec.origin).parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        changed = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return str(folder)
    return f"{commit}{' + uncommitted changes' if changed else ''} ({folder})"


def environment() -> dict[str, str]:
    return {
        "modelgate": modelgate_source(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs ({_cpu_model()}), {platform.machine()}, "
        f"Linux {platform.release()}",
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "python": platform.python_version(),
        "versions": ", ".join(
            f"{name} {_version(name)}"
            for name in (
                "onnxruntime",
                "uvicorn",
                "uvloop",
                "httptools",
                "grpcio",
                "fastapi",
                "orjson",
                "numpy",
                "tokenizers",
            )
        )
        + f", wrk {tool_version('wrk')}, h2load {tool_version('h2load')}",
    }


def busy_seconds() -> float:
    """CPU time all CPUs spent on anything but idle, I/O wait and steal, in seconds."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / _TICK


def own_cpu() -> float:
    """CPU time of this process (all threads), in seconds."""
    times = os.times()
    return times.user + times.system
