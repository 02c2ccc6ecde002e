"""What the flood rows share: a row's outcome, the requests they send, and how latencies,
statuses and memory are read and printed."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench import openloop
from bench.openloop import Outcome
from bench.procs import Server
from bench.sysinfo import descendants, tree_cpu
from bench.workloads import CREDIT, credit_json

__all__ = ["Row", "infer_request", "latency_ms", "p99", "ratio_text", "rss_mib", "statuses"]

HOST = "127.0.0.1"
#: a generator whose p99 submit lag passes this did not offer the load it was asked to
LAG_WARNING_S = 0.02


@dataclass
class Row:
    """One row of issue 15's table: what it measured against its target, and the figures
    behind it (what, value)."""

    key: str
    title: str
    target: str
    measured: str = ""
    passed: bool | None = None
    details: list[tuple[str, str]] = field(default_factory=list)

    def note(self, what: str, value: str) -> None:
        self.details.append((what, value))


def infer_request(server: Server, authorization: str | None) -> bytes:
    """One credit-risk row over OIP JSON with ``authorization``."""
    return openloop.http_request(
        "POST",
        f"/v2/models/{CREDIT}/infer",
        host=f"{HOST}:{server.http_port}",
        authorization=authorization,
        body=credit_json(),
    )


def ready_request(server: Server) -> bytes:
    return openloop.http_request("GET", "/v2/health/ready", host=f"{HOST}:{server.http_port}")


def p99(outcomes: list[Outcome]) -> float | None:
    """The p99 latency (s) of ``outcomes``; one with no answer counts as never answered
    (``inf``), so that a server that times out does not look fast."""
    return openloop.percentile([math.inf if o.latency is None else o.latency for o in outcomes], 99)


def latency_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return "no answer" if math.isinf(value) else f"{value * 1e3:.1f} ms"


def ratio_text(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return "unbounded (no answer)" if math.isinf(value) else f"{value:.2f}x"


def statuses(outcomes: list[Outcome]) -> str:
    """``200: 598, 0 (timeout): 2``: the answers by status, no answer by why."""
    counts = Counter(
        str(o.status) if o.status else f"none ({o.error.split(':')[0]})" for o in outcomes
    )
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, MiB."""
    total = 0
    for each in [pid, *descendants(pid)]:
        try:
            text = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def wait_idle(server: Server, limit: float = 30.0, cores: float = 0.05) -> float:
    """Wait until the server's process tree uses under ``cores`` (it has worked off what an
    earlier load left queued: requests whose clients gave up are still served), at most
    ``limit`` s; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = tree_cpu(server.pid)
        time.sleep(0.5)
        if (tree_cpu(server.pid) - before) / 0.5 < cores:
            break
    return time.monotonic() - start


def lag_note(row: Row, run: openloop.Run, label: str = "generator lag") -> None:
    """How late the generator sent its requests; a warning when it fell behind its schedule
    (the offered rate was then lower than asked: the machine is too busy for the run)."""
    row.note(label, f"p99 {latency_ms(run.submit_lag_p99)}, worst {latency_ms(run.submit_lag_max)}")
    if run.submit_lag_p99 > LAG_WARNING_S:
        row.note("warning", f"the generator fell behind ({label}): the offered load was lower")
