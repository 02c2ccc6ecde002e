"""A node killed with kill -9 under full load fails no request (issue 17, finding 6).

A gateway and three nodes as real processes (nodes found through the machine's Redis). Many
concurrent async clients, half over REST and half over gRPC, send inferences through the
gateway as fast as they are answered; a node is killed mid-run and started again in the
background, ten times over, each time a node other than the last one killed (so that a
restart, about ten seconds on a loaded 2-core machine, overlaps the next repetition).
What a kill does to a gateway is set by how many calls the node holds when it dies: on the
operator's machine, 64 connections at about 1,900 requests/s held about 32 on each node.
The two cores here cannot run that rate, so the model holds each batch for ``DELAY_S`` on
the node instead, and 128 clients keep about 40 calls on each of three nodes. Every
request must answer: the calls that died with the node (``Stream removed``, ``Socket
closed``, ``Connection reset by peer``) are retried on another node. When no node is left,
the client's error names no node (ids and addresses stay in the gateway's log). Each
repetition prints its figures."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import redis
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.conftest import REDIS_URL
from tests.e2e.conftest import RunningServer, start_server, stop_server

NODE_KEY = "e2e-node-key-" + "n" * 20
GATEWAY_KEY = "e2e-gateway-key-" + "g" * 20
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/sleepy/infer"
DELAY_S = 0.4
MODEL = f"""
runtime: python
artifact: model.py
preload: true
execution: thread
runtime_options: {{class: Sleepy, delay_s: {DELAY_S}}}
inputs:
  - {{name: x, datatype: FP32, shape: [-1, 4]}}
outputs:
  - {{name: y, datatype: FP32, shape: [-1, 4]}}
batching: {{max_batch_size: 256, max_queue_delay_us: 0, max_queue_size: 1024}}
"""
CODE = """
import time

from modelgate.model import PythonModel


class Sleepy(PythonModel):
    def predict(self, inputs):
        time.sleep(float(self.options["delay_s"]))
        return {"y": inputs["x"] * 2}
"""
#: node ids no message of the gateway's would contain by chance
NODE_IDS = ("node-alpha-7f3", "node-bravo-2c9", "node-charlie-5e1")
REPETITIONS = 10
#: seconds of load per repetition; the kill comes a third of the way in
LOAD_S = 2.0
REST_CLIENTS = 64
GRPC_CLIENTS = 64


class Pair:
    """A gateway and its two nodes."""

    def __init__(self, workdir: Path, prefix: str):
        self.workdir = workdir
        self.models = workdir / "models"
        (self.models / "sleepy" / "1").mkdir(parents=True)
        (self.models / "sleepy" / "model.yaml").write_text(MODEL)
        (self.models / "sleepy" / "1" / "model.py").write_text(CODE)
        self.env = {
            "MODELGATE_REDIS_URL": REDIS_URL,
            "MODELGATE_REDIS_KEY_PREFIX": prefix,
            "MODELGATE_NODE_HEARTBEAT_SECONDS": "0.5",
            "MODELGATE_NODE_TTL_SECONDS": "3",
            "MODELGATE_CLUSTER_REFRESH_SECONDS": "0.5",
            "MODELGATE_BREAKER_OPEN_SECONDS": "1",
            "MODELGATE_LOG_FORMAT": "text",
        }
        self.nodes: dict[str, RunningServer] = {}
        self.gateway: RunningServer | None = None
        self._restarts: dict[str, tuple[threading.Thread, list[BaseException]]] = {}

    def start_node(self, name: str) -> RunningServer:
        node = start_server(
            self.models,
            self.workdir / name,
            "--role",
            "node",
            "--node-id",
            name,
            env={**self.env, "MODELGATE_ADMIN_KEY": NODE_KEY},
        )
        self.nodes[name] = node
        return node

    def start_gateway(self) -> RunningServer:
        self.gateway = start_server(
            self.models,
            self.workdir / "gateway",
            "--role",
            "gateway",
            env={**self.env, "MODELGATE_ADMIN_KEY": GATEWAY_KEY, "MODELGATE_NODE_KEY": NODE_KEY},
        )
        return self.gateway

    def restart_node(self, name: str) -> None:
        """Start node ``name`` again in a thread (see :meth:`joined`)."""
        errors: list[BaseException] = []

        def start() -> None:
            try:
                self.start_node(name)
            except BaseException as exc:  # pytest.fail in start_server: told at the join
                errors.append(exc)

        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        self._restarts[name] = (thread, errors)

    def joined(self, name: str, timeout: float = 90) -> None:
        """Until node ``name``'s restart, if any, is done."""
        found = self._restarts.pop(name, None)
        if found is not None:
            thread, errors = found
            thread.join(timeout)
            assert not thread.is_alive(), f"node {name} did not start in {timeout} s"
            if errors:
                raise errors[0]

    def stop(self) -> None:
        for name in list(self._restarts):
            self.joined(name)
        for server in [*self.nodes.values(), *([self.gateway] if self.gateway else [])]:
            stop_server(server)

    def wait_until_serving(self, names: Iterable[str], timeout: float = 30) -> None:
        """Until the gateway has sent a successful request to each node of ``names`` since
        now (a restarted node is in its table and its breaker closed again)."""
        names = list(names)
        assert self.gateway is not None
        auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.gateway.url, headers=auth, timeout=10) as client:
            before = _ok_calls(client.get("/metrics").text)
            while time.monotonic() < deadline:
                for _ in range(10):
                    client.post(INFER, json=ROW)
                now = _ok_calls(client.get("/metrics").text)
                if all(now.get(n, 0) > before.get(n, 0) for n in names):
                    return
                time.sleep(0.2)
        pytest.fail("the restarted node did not come back into the gateway's rotation")


def _ok_calls(metrics: str) -> dict[str, float]:
    found = {}
    for line in metrics.splitlines():
        if line.startswith("modelgate_node_requests_total{") and 'outcome="ok"' in line:
            labels, value = line.rsplit(" ", 1)
            node = labels.split('node="', 1)[1].split('"', 1)[0]
            found[node] = float(value)
    return found


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    running = Pair(tmp_path, prefix)
    try:
        for name in NODE_IDS:
            running.start_node(name)
        running.start_gateway()
        running.wait_until_serving(NODE_IDS)
        yield running
    finally:
        running.stop()
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def _grpc_request() -> service_pb2.ModelInferRequest:
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])
    return service_pb2.ModelInferRequest(
        model_name="sleepy",
        inputs=[tensor],
        raw_input_contents=[np.array([1, 2, 3, 4], dtype="<f4").tobytes()],
    )


async def _flat_out(
    gateway: RunningServer, seconds: float, kill: RunningServer, restart: Callable[[], object]
) -> Counter[str]:
    """REST and gRPC clients as fast as they go for ``seconds``; ``kill`` is killed with
    SIGKILL a third of the way in, then ``restart`` is called. Outcome counts: ``ok``, or
    the status and message of each failure."""
    outcomes: Counter[str] = Counter()
    stop = time.monotonic() + seconds
    auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    metadata = (("authorization", f"Bearer {GATEWAY_KEY}"),)
    request = _grpc_request()
    limits = httpx.Limits(max_connections=REST_CLIENTS)
    # gRPC clients on 8 connections (8 calls each): the gateway, like any gRPC server,
    # refuses the calls over its limit per connection, and that is not what is tested here
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(gateway.grpc_address, options) for _ in range(8)]
    stubs = [service_pb2_grpc.GRPCInferenceServiceStub(channel) for channel in channels]
    async with httpx.AsyncClient(
        base_url=gateway.url, headers=auth, timeout=30, limits=limits
    ) as rest:

        async def rest_client() -> None:
            while time.monotonic() < stop:
                try:
                    answer = await rest.post(INFER, json=ROW)
                except httpx.HTTPError as exc:
                    outcomes[f"rest {type(exc).__name__}"] += 1
                    continue
                if answer.status_code == 200:
                    outcomes["ok"] += 1
                else:
                    outcomes[f"rest {answer.status_code} {answer.text}"] += 1

        async def grpc_client(number: int) -> None:
            stub = stubs[number % len(stubs)]
            while time.monotonic() < stop:
                try:
                    await stub.ModelInfer(request, metadata=metadata, timeout=30)
                    outcomes["ok"] += 1
                except grpc.aio.AioRpcError as exc:
                    outcomes[f"grpc {exc.code().name} {exc.details()}"] += 1

        async def killer() -> None:
            await asyncio.sleep(seconds / 3)
            os.kill(kill.process.pid, signal.SIGKILL)
            await asyncio.to_thread(kill.process.wait)
            restart()

        await asyncio.gather(
            *(rest_client() for _ in range(REST_CLIENTS)),
            *(grpc_client(n) for n in range(GRPC_CLIENTS)),
            killer(),
        )
    for channel in channels:
        await channel.close()
    return outcomes


def test_kill_9_of_a_node_under_full_load_fails_no_request(pair: Pair) -> None:
    gateway = pair.gateway
    assert gateway is not None
    failures: Counter[str] = Counter()
    total = 0
    for repetition in range(REPETITIONS):
        started = time.monotonic()
        victim = NODE_IDS[repetition % len(NODE_IDS)]
        last = NODE_IDS[(repetition - 1) % len(NODE_IDS)]  # may still be starting
        serving = [n for n in NODE_IDS if n != last]  # the victim and another
        for name in serving:
            pair.joined(name)
        pair.wait_until_serving(serving)
        outcomes = asyncio.run(
            _flat_out(
                gateway, LOAD_S, pair.nodes[victim], functools.partial(pair.restart_node, victim)
            )
        )
        count = sum(outcomes.values())
        total += count
        print(
            f"\nrepetition {repetition + 1}: kill -9 of {victim}: {count} requests "
            f"({count / LOAD_S:.0f}/s), failed {count - outcomes['ok']}; "
            f"{time.monotonic() - started:.1f} s with the wait for a restart"
        )
        failures.update({k: v for k, v in outcomes.items() if k != "ok"})
        assert outcomes["ok"] > REST_CLIENTS + GRPC_CLIENTS  # the load did run
    print(f"\n{REPETITIONS} kills, {total} requests, failed: {dict(failures)}")
    assert not failures


def test_with_every_node_dead_the_clients_error_names_no_node(pair: Pair) -> None:
    gateway = pair.gateway
    assert gateway is not None
    addresses = [
        address for node in pair.nodes.values() for address in (node.grpc_address, node.url)
    ]
    ports = [str(node.grpc_port) for node in pair.nodes.values()]
    for node in pair.nodes.values():
        node.process.kill()
        node.process.wait()
    # the gateway still lists them (their entries outlive them by the TTL): each call
    # reaches a dead node, and the answer is the transport's failure
    auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    rest = httpx.post(f"{gateway.url}{INFER}", json=ROW, headers=auth, timeout=30)
    channel = grpc.insecure_channel(gateway.grpc_address)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(
            _grpc_request(), metadata=(("authorization", f"Bearer {GATEWAY_KEY}"),), timeout=30
        )
    channel.close()
    grpc_error = caught.value
    print(f"\nREST {rest.status_code} {rest.text}; gRPC {grpc_error.code()} {grpc_error.details()}")
    assert rest.status_code == 503
    assert "error" in rest.json()
    assert grpc_error.code() == grpc.StatusCode.UNAVAILABLE
    for message in (rest.text, grpc_error.details() or ""):
        for secret in (*NODE_IDS, *addresses, *ports):
            assert secret not in message
    # the gateway's own log names the node, for the operator
    log = gateway.log.read_text(errors="replace")
    assert any(node in log for node in NODE_IDS)
