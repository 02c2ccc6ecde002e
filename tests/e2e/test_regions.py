"""Two regions with real network separation: each a network namespace made by this test
(``ip netns add``, loopback only) with its own Redis, node and gateway. The namespaces are
joined only by TCP bridges that add ``DELAY_MS`` each way (``tests/netns_bridge.py``):
each gateway reads the other region's Redis and reaches its node through them, as across
a WAN. Under load on both gateways, region a's node is killed (kill -9) and later
started again:

- every request is answered (region a's calls that died with the node are retried on
  region b's node at once; docs/scale-out.md, "Regions");
- gateway a's answers come from region b (``parameters.region``, ``X-Modelgate-Region``)
  after the kill, and from region a again once its node is back; gateway b's all from b;
- gateway a logs the failover and the return once each, and counts them.

Failover and failback times are measured and printed, not asserted.

Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) for ``ip netns`` and ``setns(2)``,
iproute2's ``ip``, and ``redis-server`` on the PATH; skipped, saying which, without them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.e2e.conftest import free_port

DELAY_MS = 20  # one way, between the regions
NODE_KEY = "e2e-node-key-" + "n" * 20
GATEWAY_KEY = "e2e-gateway-key-" + "g" * 20
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/double/infer"
MODEL = """
runtime: python
artifact: model.py
preload: true
execution: thread
runtime_options: {class: Double}
inputs:
  - {name: x, datatype: FP32, shape: [-1, 4]}
outputs:
  - {name: y, datatype: FP32, shape: [-1, 4]}
"""
CODE = """
from modelgate.model import PythonModel


class Double(PythonModel):
    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
"""
#: each region's ports, the same inside both namespaces (a bridge listens on the other
#: region's ports): Redis, the node's gRPC and HTTP, the gateway's HTTP and gRPC
PORTS = {
    "a": {"redis": 7379, "node": 7201, "node_http": 7101, "http": 7000, "grpc": 7001},
    "b": {"redis": 8379, "node": 8201, "node_http": 8101, "http": 8000, "grpc": 8001},
}
BRIDGE = Path(__file__).resolve().parents[1] / "netns_bridge.py"


def _netns_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    if shutil.which("redis-server") is None:
        return "redis-server is not on the PATH"
    if os.geteuid() != 0:
        return "ip netns needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    return None


@dataclass
class Regions:
    workdir: Path
    names: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    #: root-namespace ports bridged to each gateway (no delay: the clients are local)
    http: dict[str, int] = field(default_factory=dict)
    grpc: dict[str, int] = field(default_factory=dict)

    def spawn(self, name: str, region: str | None, command: list[str], env: dict[str, str]) -> None:
        log = self.workdir / f"{name}.log"
        prefix = ["ip", "netns", "exec", self.names[region]] if region else []
        with open(log, "ab") as out:
            self.processes[name] = subprocess.Popen(
                [*prefix, *command],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )
        self.logs[name] = log

    def wait_for_log(self, name: str, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[name]
            content = self.logs[name].read_text(errors="replace")
            if text in content:
                return
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{content[-4000:]}")
            time.sleep(0.1)
        pytest.fail(f"{name} did not log {text!r} in {timeout} s")

    def modelgate(self, name: str, region: str, role: str, models: Path) -> None:
        ports = PORTS[region]
        other = "b" if region == "a" else "a"
        env = {
            "MODELGATE_REGION": region,
            "MODELGATE_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
            "MODELGATE_NODE_HEARTBEAT_SECONDS": "0.5",
            "MODELGATE_NODE_TTL_SECONDS": "3",
            "MODELGATE_CLUSTER_REFRESH_SECONDS": "0.5",
            "MODELGATE_BREAKER_OPEN_SECONDS": "1",
            "MODELGATE_LOG_FORMAT": "text",
            "MODELGATE_LOG_LEVEL": "info",
        }
        if role == "node":
            env["MODELGATE_ADMIN_KEY"] = NODE_KEY
            http, grpc_port = ports["node_http"], ports["node"]
        else:
            env |= {
                "MODELGATE_ADMIN_KEY": GATEWAY_KEY,
                "MODELGATE_NODE_KEY": NODE_KEY,
                "MODELGATE_REGION_REDIS_URLS": f"redis://127.0.0.1:{PORTS[other]['redis']}/0",
            }
            http, grpc_port = ports["http"], ports["grpc"]
        command = [
            sys.executable, "-m", "modelgate", "serve", "--role", role,
            "--model-repository", str(models),
            "--data-dir", str(self.workdir / name / "data"),
            "--http-port", str(http), "--grpc-port", str(grpc_port),
        ]  # fmt: skip
        if role == "node":
            command += ["--node-id", name, "--node-address", f"127.0.0.1:{grpc_port}"]
        self.spawn(name, region, command, env)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[Regions]:
    reason = _netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    tag = secrets.token_hex(4)
    names = {"a": f"mg-{tag}-a", "b": f"mg-{tag}-b"}
    made: list[str] = []
    running = Regions(tmp_path, names)
    try:
        for namespace in names.values():
            done = subprocess.run(["ip", "netns", "add", namespace], capture_output=True)
            if done.returncode != 0:
                pytest.skip(f"ip netns add failed: {done.stderr.decode().strip()}")
            made.append(namespace)
            subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"],
                           check=True)  # fmt: skip
        yield running
    finally:
        running.stop()
        for namespace in made:
            # anything still inside (a grandchild) goes with it, by its own pid
            pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", namespace], check=False)


def test_a_region_that_loses_its_nodes_fails_over_and_back(
    regions: Regions, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    (models / "double" / "1").mkdir(parents=True)
    (models / "double" / "model.yaml").write_text(MODEL)
    (models / "double" / "1" / "model.py").write_text(CODE)
    python = sys.executable
    for region in ("a", "b"):
        other = "b" if region == "a" else "a"
        regions.spawn(
            f"redis-{region}", region,
            ["redis-server", "--port", str(PORTS[region]["redis"]), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            {},
        )  # fmt: skip
        # the WAN: the other region's Redis and node, reachable here at their own ports
        regions.spawn(
            f"wan-to-{other}", region,
            [python, str(BRIDGE), "--to", regions.names[other], "--delay-ms", str(DELAY_MS),
             str(PORTS[other]["redis"]), str(PORTS[other]["node"])],
            {},
        )  # fmt: skip
        regions.http[region], regions.grpc[region] = free_port(), free_port()
        regions.spawn(
            f"clients-{region}", None,
            [python, str(BRIDGE), "--to", regions.names[region],
             f"{regions.http[region]}:{PORTS[region]['http']}",
             f"{regions.grpc[region]}:{PORTS[region]['grpc']}"],
            {},
        )  # fmt: skip
    for name in ("redis-a", "redis-b"):
        regions.wait_for_log(name, "Ready to accept connections")
    for region in ("a", "b"):
        regions.modelgate(f"node-{region}", region, "node", models)
    for region in ("a", "b"):
        regions.wait_for_log(f"node-{region}", "modelgate ready")
        regions.modelgate(f"gateway-{region}", region, "gateway", models)
    for region in ("a", "b"):
        regions.wait_for_log(f"gateway-{region}", "modelgate ready")

    clients = {r: httpx.Client(base_url=f"http://127.0.0.1:{regions.http[r]}", headers=AUTH,
                               timeout=10) for r in ("a", "b")}  # fmt: skip
    try:
        for region in ("a", "b"):  # each gateway serves from its own region at first
            deadline = time.monotonic() + 30
            while True:
                response = clients[region].post(INFER, json=ROW)
                if response.status_code == 200:
                    break
                assert time.monotonic() < deadline, response.text
                time.sleep(0.2)
            assert response.json()["parameters"]["region"] == region
            assert response.headers["x-modelgate-region"] == region
        grpc_client = grpcclient.InferenceServerClient(f"127.0.0.1:{regions.grpc['b']}")
        tensor = grpcclient.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        answer = grpc_client.infer(
            "double", [tensor], headers={"authorization": AUTH["Authorization"]}
        ).get_response()
        assert answer.parameters["region"].string_param == "b"
        grpc_client.close()

        # load: (sent at, answered at, status, region) per request, on both gateways
        records: dict[str, list[tuple[float, float, int, str]]] = {"a": [], "b": []}
        stop = threading.Event()

        def load(region: str) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{regions.http[region]}",
                              headers=AUTH, timeout=10) as client:  # fmt: skip
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        response = client.post(INFER, json=ROW)
                        status = response.status_code
                        where = response.headers.get("x-modelgate-region", "")
                    except httpx.HTTPError:
                        status, where = 0, ""
                    records[region].append((sent, time.monotonic(), status, where))

        threads = [threading.Thread(target=load, args=(r,)) for r in ("a", "a", "a", "b")]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.5)
            regions.processes["node-a"].send_signal(signal.SIGKILL)  # region a loses its node
            regions.processes["node-a"].wait()
            killed = time.monotonic()
            time.sleep(4.0)  # past the node's TTL: gone from gateway a's table
            regions.modelgate("node-a", "a", "node", models)
            regions.wait_for_log("node-a", "modelgate ready")
            restarted = time.monotonic()
            deadline = restarted + 20
            while not any(
                where == "a" and sent > restarted for sent, _, _, where in list(records["a"])
            ):
                assert time.monotonic() < deadline, "gateway a did not come back to region a"
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
    finally:
        for client in clients.values():
            client.close()

    answered_a = records["a"]
    failed = [r for r in answered_a + records["b"] if r[2] != 200]
    after_kill = [r for r in answered_a if r[0] >= killed and r[0] < restarted]
    first_b = min(done for sent, done, _, where in after_kill if where == "b")
    served_a_after_kill = [r for r in after_kill if r[3] == "a"]
    back = min(done for sent, done, _, where in answered_a if where == "a" and sent > restarted)
    slowest = max(done - sent for sent, done, _, _ in after_kill)
    before = [done - sent for sent, done, _, where in answered_a if sent < killed]
    gateway_log = regions.logs["gateway-a"].read_text(errors="replace")
    away = gateway_log.count("failing over to region b")
    home = gateway_log.count("back from region b")
    print(
        f"\nregions a and b, {DELAY_MS} ms each way between them: gateway a answered "
        f"{len(answered_a)} requests, gateway b {len(records['b'])}, failed {len(failed)}; "
        f"first answer from region b {1000 * (first_b - killed):.0f} ms after the kill; "
        f"slowest request during the failover {1000 * slowest:.0f} ms (median before "
        f"{1000 * float(np.median(before)):.1f} ms); back in region a "
        f"{1000 * (back - restarted):.0f} ms after its node was ready; "
        f"failover log lines {away}, return lines {home}"
    )
    assert failed == []
    assert served_a_after_kill == []  # nothing came from the dead region
    assert {where for _, _, _, where in records["b"]} == {"b"}  # b never left home
    assert (away, home) == (1, 1)  # logged once per transition, not per request
    metrics = httpx.get(f"http://127.0.0.1:{regions.http['a']}/metrics", headers=AUTH).text
    moved = [line for line in metrics.splitlines()
             if line.startswith("modelgate_region_failovers_total{")]  # fmt: skip
    assert len(moved) == 2 and all(line.endswith(" 1.0") for line in moved), moved
