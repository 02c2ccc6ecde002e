"""A sharded model served across nodes too small for it (issue 13, "Model sharding").

MiniLM (the demo's all-MiniLM-L6-v2, 90 MB) is split by ``modelgate shard`` after its first
encoder layer into a 55 MB and a 36 MB stage, in a repository of its own. Three nodes run
with a 60 MB memory budget each, too small for the whole model: the first places itself
(it takes stage 1, the stage nobody holds), the next two, started together, take the stage
fewer nodes hold when each looks in the directory (both stage 2, or one of each when one
announced first), so one stage has two replicas. Through a gateway, clients see one model:
its metadata, OIP REST and gRPC and ``/v1/embeddings``, with embeddings equal to the whole
model's run in this process (cosine >= 0.9999 on the demo's reference sentences). Then one
replica of the stage two nodes hold is killed with kill -9 under concurrent load, and no
request fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import redis
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.serving.ports import VersionSource
from modelgate.demo.sentences import REFERENCE_SENTENCES
from modelgate.repository.filesystem import FileModelRepository
from modelgate.runtimes.catalog import loaders
from tests.conftest import REDIS_URL
from tests.e2e.conftest import RunningServer, run_cli, start_server, stop_server

MODEL = "all-MiniLM-L6-v2"
BUILT = Path(__file__).resolve().parents[2] / "build" / "models" / MODEL
CUT = "/transformer/encoder/layer.0/output/LayerNorm/LayerNormalization_output_0"
NODE_KEY = "e2e-node-key-" + "s" * 20
GATEWAY_KEY = "e2e-gateway-key-" + "s" * 20
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
BUDGET_MB = 60
#: the reference sentences that fit the model's token window (the gateway refuses longer
#: ones on /v1 unless asked to truncate, as for the whole model)
SENTENCES = [s for s in REFERENCE_SENTENCES if len(s.encode()) < 1000]

pytestmark = pytest.mark.skipif(
    not (BUILT / "1" / "model.onnx").is_file(), reason="the demo models are not built"
)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding only the sharded version (2) of MiniLM; version 1, the whole
    model it was split from, is removed after sharding so that no node could load it."""
    root = tmp_path_factory.mktemp("sharded") / "models"
    model = root / MODEL
    (model / "1").mkdir(parents=True)
    manifest = yaml.safe_load((BUILT / "model.yaml").read_text())
    manifest.pop("default_version", None)
    (model / "model.yaml").write_text(yaml.safe_dump(manifest))
    shutil.copy(BUILT / "tokenizer.json", model / "tokenizer.json")
    for name in ("model.onnx", "version.yaml"):
        shutil.copy(BUILT / "1" / name, model / "1" / name)
    out = run_cli(
        {"MODELGATE_MODEL_REPOSITORY": str(root)},
        "shard", MODEL, "--version", "1", "--at", CUT, "--rows", "8",
    )  # fmt: skip
    assert "into version 2: 2 stages" in out, out
    shutil.rmtree(model / "1")
    return root


@pytest.fixture(scope="module")
def whole() -> dict[str, np.ndarray]:
    """The unsplit model's answers, run in this process through its own runtime."""
    source = next(
        s for s in FileModelRepository(str(BUILT.parent)).versions(MODEL) if s.version == 1
    )
    predictor = loaders()["text-embedding"](VersionSource(1, source.path, source.manifest))
    try:
        texts = np.array([s.encode() for s in SENTENCES], dtype=object)
        return predictor.predict({"text": texts})
    finally:
        predictor.close()


class Cluster:
    def __init__(self, workdir: Path, models: Path, prefix: str):
        self.workdir = workdir
        self.models = models
        self.env = {
            "MODELGATE_REDIS_URL": REDIS_URL,
            "MODELGATE_REDIS_KEY_PREFIX": prefix,
            "MODELGATE_NODE_HEARTBEAT_SECONDS": "0.5",
            "MODELGATE_NODE_TTL_SECONDS": "3",
            "MODELGATE_CLUSTER_REFRESH_SECONDS": "0.5",
            "MODELGATE_BREAKER_OPEN_SECONDS": "1",
            "MODELGATE_JOBS_WORKER": "false",
            "MODELGATE_LOG_FORMAT": "text",
        }
        self.servers: dict[str, RunningServer] = {}

    def start_node(self, name: str) -> RunningServer:
        env = {
            **self.env,
            "MODELGATE_ADMIN_KEY": NODE_KEY,
            "MODELGATE_MEMORY_BUDGET_MB": str(BUDGET_MB),
        }
        node = start_server(
            self.models, self.workdir / name, "--role", "node", "--node-id", name, env=env
        )
        self.servers[name] = node
        return node

    def start_gateway(self) -> RunningServer:
        env = {**self.env, "MODELGATE_ADMIN_KEY": GATEWAY_KEY, "MODELGATE_NODE_KEY": NODE_KEY}
        gateway = start_server(self.models, self.workdir / "gateway", "--role", "gateway", env=env)
        self.servers["gateway"] = gateway
        return gateway


def _announced(prefix: str) -> dict[str, list[str]]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        found = {}
        for key in client.scan_iter(f"{prefix}node:*"):
            document = json.loads(client.get(key) or b"{}")
            found[document["id"]] = sorted(document.get("stages", {}))
        return found
    finally:
        client.close()


def _embed_rest(url: str, texts: list[str]) -> np.ndarray:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    response = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    return np.array(outputs["embedding"]["data"], dtype=np.float32).reshape(len(texts), -1)


@pytest.fixture(scope="module")
def cluster(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    prefix = f"e2e-shard-{os.getpid()}:"
    running = Cluster(tmp_path_factory.mktemp("shard-cluster"), repository, prefix)
    try:
        running.start_node("node-one")  # alone: takes the stage nobody holds yet, stage 1
        deadline = time.monotonic() + 10
        while "node-one" not in _announced(prefix) and time.monotonic() < deadline:
            time.sleep(0.1)
        with ThreadPoolExecutor(3) as pool:  # both find stage 1 held: they take stage 2
            started = [pool.submit(running.start_node, n) for n in ("node-two", "node-three")]
            gateway = pool.submit(running.start_gateway)
            for future in started:
                future.result()
            gateway.result()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if (
                    httpx.get(
                        f"{running.servers['gateway'].url}/v2/models/{MODEL}/ready",
                        headers=AUTH,
                        timeout=2,
                    ).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        time.sleep(1.5)  # the gateway's table has every node
        running.prefix = prefix  # type: ignore[attr-defined]
        yield running
    finally:
        for server in running.servers.values():
            stop_server(server)


def test_nodes_place_the_stages_within_their_budgets(cluster: Cluster, repository: Path) -> None:
    stages = yaml.safe_load((repository / MODEL / "2" / "version.yaml").read_text())["stages"]
    budget = BUDGET_MB * 1024 * 1024
    assert sum(s["size_bytes"] for s in stages) > budget  # the whole model fits no node
    assert all(s["size_bytes"] <= budget for s in stages)
    held = _announced(cluster.prefix)  # type: ignore[attr-defined]
    # node-one, alone, took the stage nobody held; the other two, started together, took
    # the stage fewer nodes held when they looked (both stage 2, or one of each)
    assert held["node-one"] == [f"{MODEL}.stage1"]
    assert sorted(held) == ["node-one", "node-three", "node-two"]
    assert all(len(stages) == 1 for stages in held.values())
    assert {s for stages in held.values() for s in stages} == {
        f"{MODEL}.stage1",
        f"{MODEL}.stage2",
    }


def test_clients_see_one_model_equal_to_the_whole(
    cluster: Cluster, whole: dict[str, np.ndarray]
) -> None:
    url = cluster.servers["gateway"].url
    meta = httpx.get(f"{url}/v2/models/{MODEL}", headers=AUTH, timeout=10).json()
    assert [i["name"] for i in meta["inputs"]] == ["text"]
    assert [o["name"] for o in meta["outputs"]] == ["embedding", "token_count"]
    got = _embed_rest(url, SENTENCES)
    assert _cosines(got, whole["embedding"]).min() >= 0.9999

    rows = [i for i, s in enumerate(SENTENCES) if s]  # /v1 refuses an empty input
    response = httpx.post(
        f"{url}/v1/embeddings",
        json={"model": MODEL, "input": [SENTENCES[i] for i in rows]},
        headers=AUTH,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    v1 = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert _cosines(v1, whole["embedding"][rows]).min() >= 0.9999
    assert body["usage"]["prompt_tokens"] == int(whole["token_count"][rows].sum())

    gateway = cluster.servers["gateway"]
    with grpc.insecure_channel(gateway.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name=MODEL)
        tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(SENTENCES)])
        tensor.contents.bytes_contents.extend(s.encode() for s in SENTENCES)
        reply = stub.ModelInfer(
            request, metadata=(("authorization", f"Bearer {GATEWAY_KEY}"),), timeout=30
        )
    index = [o.name for o in reply.outputs].index("embedding")
    grpc_embeddings = np.frombuffer(reply.raw_output_contents[index], dtype=np.float32)
    assert _cosines(grpc_embeddings.reshape(len(SENTENCES), -1), whole["embedding"]).min() >= 0.9999


def test_a_stage_replica_killed_under_load_fails_no_request(
    cluster: Cluster, whole: dict[str, np.ndarray]
) -> None:
    url = cluster.servers["gateway"].url
    texts = SENTENCES[:4]
    stop = threading.Event()
    answers: list[int] = []
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(headers=AUTH, timeout=30) as http:
            body = {
                "inputs": [
                    {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
                ]
            }
            while not stop.is_set():
                response = http.post(f"{url}/v2/models/{MODEL}/infer", json=body)
                if response.status_code == 200:
                    answers.append(1)
                else:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(12)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    before = len(answers)
    held = _announced(cluster.prefix)  # type: ignore[attr-defined]
    # a replica of the stage two nodes hold (which nodes, depends on their start order)
    name, (replicated,) = next(
        (node, stages)
        for node, stages in sorted(held.items())
        if sum(stages[0] in other for other in held.values()) == 2
    )
    victim = cluster.servers.pop(name)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    time.sleep(3.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    print(
        f"killed a replica of {replicated}: answered {len(answers)} ({before} before the "
        f"kill), failed {len(failures)}"
    )
    assert not failures, failures[:3]
    assert len(answers) > before  # the surviving replica kept answering
    got = _embed_rest(url, SENTENCES)
    assert _cosines(got, whole["embedding"]).min() >= 0.9999
