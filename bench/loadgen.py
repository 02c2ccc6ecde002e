"""Load generators: ``wrk`` for HTTP/1.1 and ``h2load`` for gRPC (HTTP/2 with a pre-encoded
gRPC frame), each bounded in time, pinned with taskset, and parsed into :class:`Load`."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench import workloads
from bench.procs import pinned, run_bounded

__all__ = ["Load", "ensure_tools", "h2load", "lua_script", "wrk"]

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Load:
    """One load-generator run: throughput, latency in milliseconds, and its own CPU time."""

    rps: float
    requests: int
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    errors: int = 0
    cpu_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def ensure_tools() -> None:
    """Install wrk and h2load from Debian packages when missing (the benchmark machine)."""
    missing = [t for t in ("wrk", "h2load", "taskset") if shutil.which(t) is None]
    if not missing:
        return
    print(f"installing load generators ({', '.join(missing)}) with apt-get ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk", "nghttp2-client", "util-linux"],
        check=True,
        timeout=600,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def tool_version(name: str) -> str:
    try:
        if name == "wrk":
            out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout
            return out.split("Copyright")[0].replace("wrk", "").strip().split(" [")[0]
        out = subprocess.run([name, "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.strip().split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def lua_script(
    path: Path,
    bodies: list[bytes],
    content_type: str = "application/json",
    authorization: str = workloads.AUTHORIZATION,
) -> Path:
    """A wrk script that POSTs ``bodies`` (one static body, or round-robin over several)
    with ``authorization`` (the bootstrap key's by default)."""

    def quote(body: bytes) -> str:
        text = body.decode()
        assert "]==]" not in text
        return f"[==[{text}]==]"

    lines = [
        'wrk.method = "POST"',
        f'wrk.headers["Content-Type"] = "{content_type}"',
        f'wrk.headers["Authorization"] = "{authorization}"',
    ]
    if len(bodies) == 1:
        lines.append(f"wrk.body = {quote(bodies[0])}")
    else:
        lines.append("local bodies = {" + ", ".join(quote(b) for b in bodies) + "}")
        lines += [
            "local i = 0",
            "request = function()",
            "  i = i % #bodies + 1",
            '  return wrk.format("POST", nil, nil, bodies[i])',
            "end",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(
    url: str,
    script: Path,
    connections: int,
    seconds: float,
    *,
    cpus: str | None = "1",
    threads: int = 1,
) -> Load:
    argv = pinned(
        cpus,
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "5s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
    )
    before = children_cpu()
    out = run_bounded(argv, timeout=seconds + 30).stdout
    cpu = children_cpu() - before
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s),", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if total is None or rps is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    pct = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    mean = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Load(
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1e3,
        p50_ms=pct.get("50"),
        p99_ms=pct.get("99"),
        mean_ms=_ms(*mean.groups()) if mean else None,
        errors=errors,
        cpu_s=cpu,
    )


def h2load(
    url: str,
    body: Path,
    *,
    connections: int,
    streams: int,
    seconds: float,
    headers: list[str],
    cpus: str | None = "1",
    response_bytes: int | None = None,
) -> Load:
    """``connections`` x ``streams`` concurrent requests for ``seconds`` (no warm-up: run one).

    h2load cannot see grpc-status (it sits in trailers), so a failed call is detected by its
    missing body: every answered call must carry ``response_bytes`` of DATA.
    """
    argv = ["h2load", "-t1", f"-c{connections}", f"-m{streams}", f"-D{seconds:g}", "-d", str(body)]
    for header in headers:
        argv += ["-H", header]
    before = children_cpu()
    out = run_bounded(pinned(cpus, [*argv, url]), timeout=seconds + 30).stdout
    cpu = children_cpu() - before
    finished = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", out)
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    data = re.search(r"\((\d+)\) data", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if finished is None or done is None or data is None:
        raise RuntimeError(f"cannot parse h2load output:\n{out}")
    succeeded = int(done.group(2))
    errors = sum(int(n) for n in done.groups()[2:])
    if response_bytes and succeeded:
        per_call = int(data.group(1)) / succeeded
        if abs(per_call - response_bytes) > 1:
            errors += succeeded  # answered without the expected message: a gRPC error status
    return Load(
        rps=float(finished.group(3)),
        requests=succeeded,
        seconds=_ms(finished.group(1), finished.group(2)) / 1e3,
        mean_ms=_ms(*mean.groups()) if mean else None,
        errors=errors,
        cpu_s=cpu,
    )
