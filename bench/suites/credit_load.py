"""credit-risk REST load against servers already started, as issue 11's added rows share it:
the infer URL, an OIP body for any row, a wrk round that records the CPU per request of
every process serving it (one server, or a gateway and its nodes together), and the medians
and table cells of a set of rounds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from bench import loadgen, workloads
from bench.loadgen import Load
from bench.procs import Server
from bench.suites.measuring import (
    authorization,
    background_text,
    checked,
    median,
    ms_text,
    number_text,
    rounds_text,
)
from bench.sysinfo import tree_cpu

__all__ = [
    "COLUMNS",
    "credit_body",
    "infer_url",
    "row_cells",
    "script_for",
    "served_by",
    "summary",
]

#: the table columns of :func:`row_cells`
COLUMNS = [
    "req/s (median)",
    "p50",
    "p99",
    "server CPU/req",
    "others' cores",
    "rounds req/s",
]


def infer_url(server: Server, model: str = workloads.CREDIT) -> str:
    return f"http://127.0.0.1:{server.http_port}/v2/models/{model}/infer"


def credit_body(row: Sequence[float]) -> bytes:
    """One credit-risk applicant as OIP JSON (12 features, manifest order)."""
    return orjson.dumps(
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 12], "data": [row]}]}
    )


def script_for(server: Server, path: Path, body: bytes) -> Path:
    """A wrk script posting ``body`` with the key requests to ``server`` carry."""
    return loadgen.lua_script(path, [body], authorization=authorization(server))


def served_by(
    entry: Server,
    serving: Sequence[Server],
    script: Path,
    connections: int,
    seconds: float,
    cpus: str | None,
) -> Callable[[], Load]:
    """A wrk round against ``entry``; the CPU time of every process tree in ``serving``
    (``entry`` and whatever it forwards to) is added up into ``server_us_per_req``, each
    one's own share into ``us_per_req:<name>``."""

    def run() -> Load:
        before = {s.name: tree_cpu(s.pid) for s in serving}
        load = checked(
            loadgen.wrk(infer_url(entry), script, connections, seconds, cpus=cpus), entry.name
        )
        spent = {s.name: tree_cpu(s.pid) - before[s.name] for s in serving}
        requests = max(load.requests, 1)
        for name, seconds_spent in spent.items():
            load.extra[f"us_per_req:{name}"] = seconds_spent / requests * 1e6
        load.extra["server_us_per_req"] = sum(spent.values()) / requests * 1e6
        return load

    return run


def summary(loads: list[Load]) -> dict[str, float]:
    """Medians over rounds: ``rps``, ``p50``, ``p99`` (ms), ``cpu`` (µs per request)."""
    return {
        "rps": median([x.rps for x in loads]),
        "p50": median([x.p50_ms or 0 for x in loads]),
        "p99": median([x.p99_ms or 0 for x in loads]),
        "cpu": median([x.extra["server_us_per_req"] for x in loads]),
    }


def row_cells(loads: list[Load]) -> list[str]:
    """The cells of :data:`COLUMNS` for a set of rounds."""
    m = summary(loads)
    return [
        number_text(m["rps"]),
        ms_text(m["p50"]),
        ms_text(m["p99"]),
        f"{m['cpu']:.0f} µs",
        background_text(loads),
        rounds_text([x.rps for x in loads]),
    ]
