"""ONNX Runtime's ``allow_spinning`` on and off: MiniLM at concurrency 1, what it costs the
server in CPU and what it gives in throughput.

    .venv/bin/python -m bench.spinning [--models build/models] [--seconds 8] [--rounds 3]

Two modelgate servers serve MiniLM's default version, the same but for
``runtime_options.allow_spinning`` (true, ONNX Runtime's default; false). One client, this
process on one keep-alive HTTP/1.1 connection, sends one-sentence OIP requests to one
server at a time, in alternating rounds (on, off, off, on, ...), so both see the same
machine. Per round: requests/s, p50, and the CPU time of the server's process tree over the
round, per request and per second (cores). Nothing is pinned: the model runs two intra-op
threads on both cores, as ``bench``'s MiniLM suite runs it. On a shared machine read the
ratios (off over on), not the absolute numbers.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench import workloads
from bench.procs import Server, free_port, http_ready, servers
from bench.sysinfo import busy_seconds, own_cpu, tree_cpu

__all__ = ["main"]


@dataclass
class Round:
    requests: int
    seconds: float
    p50_ms: float
    server_cpu_s: float
    others_cores: float  # cores used by neither the server nor this client meanwhile

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s / self.requests * 1e3

    @property
    def cores(self) -> float:
        return self.server_cpu_s / self.seconds


def _repository(models: Path, root: Path, spinning: bool) -> Path:
    """A repository holding MiniLM's default version only, with ``allow_spinning`` set.
    The version folder is a link (allowed); the shared tokenizer is copied beside it."""
    source = models / workloads.MINILM
    manifest = yaml.safe_load((source / "model.yaml").read_text())
    version = str(manifest.get("default_version") or 1)
    manifest["runtime_options"]["allow_spinning"] = spinning
    manifest["version_policy"] = {"specific": [int(version)]}
    target = root / ("on" if spinning else "off") / workloads.MINILM
    target.mkdir(parents=True)
    (target / "model.yaml").write_text(yaml.safe_dump(manifest))
    shutil.copy(
        source / str(manifest["runtime_options"].get("tokenizer", "tokenizer.json")), target
    )
    (target / version).symlink_to((source / version).resolve(), target_is_directory=True)
    return target.parent


def _start(repository: Path, work: Path, tag: str) -> Server:
    http, grpc = free_port(), free_port()
    argv = [
        sys.executable, "-m", "modelgate", "serve", "--model-repository", str(repository),
        "--http-port", str(http), "--grpc-port", str(grpc), "--data-dir", str(work / f"{tag}-data"),
    ]  # fmt: skip
    server = Server(tag, argv, work, env={"MODELGATE_ADMIN_KEY": workloads.BENCH_KEY})
    server.http_port, server.grpc_port = http, grpc
    ready = http_ready(f"http://127.0.0.1:{http}/v2/health/ready")
    return server.start(lambda: "modelgate ready" in server.log_text() and ready(), timeout=180)


def _round(server: Server, seconds: float) -> Round:
    """Concurrency 1 for ``seconds`` after a one-second warm-up, on one connection."""
    bodies = [workloads.sentence_json(s) for s in workloads.SENTENCES]
    path = f"/v2/models/{workloads.MINILM}/infer"
    headers = {"content-type": "application/json", "authorization": workloads.AUTHORIZATION}
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)

    def call(i: int) -> None:
        connection.request("POST", path, bodies[i % len(bodies)], headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{server.name}: HTTP {response.status}")

    warm_until = time.perf_counter() + 1.0
    i = 0
    while time.perf_counter() < warm_until:
        call(i)
        i += 1
    latencies: list[float] = []
    cpu, busy, mine = tree_cpu(server.pid), busy_seconds(), own_cpu()
    start = now = time.perf_counter()
    while now - start < seconds:
        call(i)
        i += 1
        after = time.perf_counter()
        latencies.append(after - now)
        now = after
    spent = tree_cpu(server.pid) - cpu
    others = busy_seconds() - busy - spent - (own_cpu() - mine)
    connection.close()
    elapsed = now - start
    return Round(
        len(latencies), elapsed, statistics.median(latencies) * 1e3, spent, others / elapsed
    )


def _median(rounds: list[Round], value: str) -> float:
    return statistics.median(float(getattr(r, value)) for r in rounds)


def _row(name: str, rounds: list[Round]) -> str:
    cells = [
        name,
        f"{_median(rounds, 'rps'):.0f}",
        f"{_median(rounds, 'p50_ms'):.2f} ms",
        f"{_median(rounds, 'cpu_ms_per_request'):.2f} ms",
        f"{_median(rounds, 'cores'):.2f}",
        f"{_median(rounds, 'others_cores'):.2f}",
        " / ".join(f"{r.rps:.0f}" for r in rounds),
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spinning", description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("build/models"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[bool, list[Round]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="bench-spinning-") as scratch, servers() as started:
        work = Path(scratch)
        for spinning in (True, False):
            repository = _repository(args.models, work / "repositories", spinning)
            started.append(_start(repository, work, "spin-on" if spinning else "spin-off"))
        on, off = started
        for n in range(args.rounds):
            for spinning in (True, False) if n % 2 == 0 else (False, True):
                results[spinning].append(_round(on if spinning else off, args.seconds))
    print(f"MiniLM, c=1, one sentence per request, {args.rounds} rounds of {args.seconds:g} s")
    print()
    columns = ["allow_spinning", "req/s", "p50", "server CPU per request", "server cores"]
    columns += ["others' cores", "rounds req/s"]
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    print(_row("true (ONNX Runtime's default)", results[True]))
    print(_row("false", results[False]))

    def ratio(value: str) -> float:
        return _median(results[False], value) / _median(results[True], value)

    print()
    print(
        f"off / on: req/s {ratio('rps'):.2f}x, p50 {ratio('p50_ms'):.2f}x, "
        f"server CPU per request {ratio('cpu_ms_per_request'):.2f}x, "
        f"server cores {ratio('cores'):.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
