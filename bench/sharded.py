"""The sharded MiniLM against the whole one, through a gateway (issue 13, "Model sharding").

Two clusters on this machine, sharing its Redis under two key prefixes:

- **whole**: a gateway and one node serving the demo's all-MiniLM-L6-v2 version 1;
- **sharded**: a gateway and two nodes, each with a 60 MB memory budget, holding the two
  stages ``modelgate shard`` makes of it (cut after the first encoder layer: 55 + 36 MB).

Each round sends ``--clients`` concurrent clients' OIP REST requests (``--texts`` reference
sentences each) to one cluster for ``--seconds``, the two clusters in turn, ``--rounds``
times. Printed per cluster, medians over the rounds: requests per second, latency p50 and
p99, and the CPU time per request of all the cluster's processes together (gateway and
nodes; from /proc), the figure to compare on a shared, noisy machine, and the gateway's
part of it.

    PYTHONPATH=src .venv/bin/python -m bench.sharded --rounds 5 --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.procs import ROOT, Server, free_port, http_ready, servers
from modelgate.demo.sentences import REFERENCE_SENTENCES

MODEL = "all-MiniLM-L6-v2"
BUILT = ROOT / "build" / "models" / MODEL
CUT = "/transformer/encoder/layer.0/output/LayerNorm/LayerNormalization_output_0"
KEY = "bench-sharded-key-" + "k" * 20
TICKS = os.sysconf("SC_CLK_TCK")


def _repository(root: Path, *, sharded: bool, spinning: bool) -> Path:
    model = root / MODEL
    (model / "1").mkdir(parents=True)
    manifest = yaml.safe_load((BUILT / "model.yaml").read_text())
    manifest.pop("default_version", None)
    if not spinning:  # idle ONNX Runtime threads sleep (docs/model-repository.md)
        manifest.setdefault("runtime_options", {})["allow_spinning"] = False
    (model / "model.yaml").write_text(yaml.safe_dump(manifest))
    shutil.copy(BUILT / "tokenizer.json", model / "tokenizer.json")
    for name in ("model.onnx", "version.yaml"):
        shutil.copy(BUILT / "1" / name, model / "1" / name)
    if sharded:
        subprocess.run(
            [sys.executable, "-m", "modelgate", "shard", MODEL, "--version", "1", "--at", CUT,
             "--model-repository", str(root), "--rows", "8"],
            check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        shutil.rmtree(model / "1")  # the nodes hold stages only
    return root


def _server(name: str, repository: Path, logs: Path, role: str, env: dict[str, str]) -> Server:
    server = Server(
        name,
        [sys.executable, "-m", "modelgate", "serve", "--role", role,
         "--model-repository", str(repository), "--data-dir", str(logs / name)],
        logs,
        env={
            "MODELGATE_ADMIN_KEY": KEY,
            "MODELGATE_NODE_KEY": KEY,
            "MODELGATE_JOBS_WORKER": "false",
            "MODELGATE_LOG_LEVEL": "warning",
            **env,
        },
    )  # fmt: skip
    server.http_port, server.grpc_port = free_port(), free_port()
    server.argv += ["--http-port", str(server.http_port), "--grpc-port", str(server.grpc_port)]
    if role == "node":
        server.argv += ["--node-id", name]
    return server


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


async def _load(url: str, clients: int, texts: list[str], seconds: float) -> list[float]:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    latencies: list[float] = []
    failures = 0
    end = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        while time.monotonic() < end:
            started = time.perf_counter()
            response = await http.post(f"{url}/v2/models/{MODEL}/infer", json=body)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--texts", type=int, default=4)
    parser.add_argument(
        "--no-spinning", action="store_true", help="runtime_options.allow_spinning: false"
    )
    args = parser.parse_args()
    texts = [s for s in REFERENCE_SENTENCES if 0 < len(s) < 200][: args.texts]
    work = Path(tempfile.mkdtemp(prefix="modelgate-bench-sharded-"))
    redis = os.environ.get("MODELGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    results: dict[str, list[tuple[float, float, float, float, float]]] = {
        "whole": [],
        "sharded": [],
    }
    try:
        with servers() as started:
            clusters: dict[str, tuple[str, list[int]]] = {}
            for kind in ("whole", "sharded"):
                repository = _repository(
                    work / kind, sharded=kind == "sharded", spinning=not args.no_spinning
                )
                env = {
                    "MODELGATE_REDIS_URL": redis,
                    "MODELGATE_REDIS_KEY_PREFIX": f"bench-{kind}-{os.getpid()}:",
                }
                nodes = ["node"] if kind == "whole" else ["node-1", "node-2"]
                pids = []
                for name in nodes:
                    budget = {"MODELGATE_MEMORY_BUDGET_MB": "60"} if kind == "sharded" else {}
                    node = _server(f"{kind}-{name}", repository, work, "node", {**env, **budget})
                    started.append(
                        node.start(http_ready(f"http://127.0.0.1:{node.http_port}/v2/health/ready"))
                    )
                    pids.append(node.pid)
                    time.sleep(1.5)  # announced before the next node places itself
                gateway = _server(f"{kind}-gateway", repository, work, "gateway", env)
                url = f"http://127.0.0.1:{gateway.http_port}"
                started.append(gateway.start(http_ready(f"{url}/v2/health/ready")))
                time.sleep(2)
                asyncio.run(_load(url, 2, texts, 2.0))  # warm: connections, batchers
                clusters[kind] = (url, [gateway.pid, *pids])
            for round_ in range(args.rounds):
                for kind, (url, pids) in clusters.items():
                    cpu, gateway_cpu = _cpu_seconds(pids), _cpu_seconds(pids[:1])
                    latencies = asyncio.run(_load(url, args.clients, texts, args.seconds))
                    cpu = _cpu_seconds(pids) - cpu
                    gateway_cpu = _cpu_seconds(pids[:1]) - gateway_cpu
                    latencies.sort()
                    row = (
                        len(latencies) / args.seconds,
                        latencies[len(latencies) // 2] * 1000,
                        latencies[int(len(latencies) * 0.99)] * 1000,
                        cpu / len(latencies) * 1000,
                        gateway_cpu / len(latencies) * 1000,
                    )
                    results[kind].append(row)
                    line = f"{row[0]:7.1f} req/s  p50 {row[1]:6.1f} ms  p99 {row[2]:6.1f} ms"
                    cpu_line = f"CPU {row[3]:6.2f} ms/request (gateway {row[4]:5.2f})"
                    print(f"round {round_ + 1} {kind:8} {line}  {cpu_line}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nmedians of {args.rounds} rounds, {args.clients} clients, {len(texts)} texts a request:"
    )
    for kind, rows in results.items():
        median = [statistics.median(r[i] for r in rows) for i in range(5)]
        print(f"{kind:8} {median[0]:7.1f} req/s  p50 {median[1]:6.1f} ms  p99 {median[2]:6.1f} ms  "
              f"CPU {median[3]:6.2f} ms/request (gateway {median[4]:5.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
