"""A real Triton server and a real MLServer as the nodes of a modelgate gateway's static
list (``MODELGATE_NODES``): clients reach a model on each through the gateway over REST and
gRPC, with modelgate's authentication, validation, rate limits and metering in front.

- **Triton** is the ``tritonserver`` that PyTriton (``nvidia-pytriton``, PyPI) ships, CPU
  only, serving ``affine`` (y = 2x + 1) from ``tests/e2e/oip_nodes/triton_node.py``.
  PyTriton restricts Triton's repository index to a token of its own, so the gateway finds
  the model by name (``MODELGATE_NODE_MODELS``).
- **MLServer** (``mlserver`` and ``mlserver-sklearn``, PyPI) serves two scikit-learn models
  (``tests/e2e/oip_nodes/sklearn_model.py``), found through its repository index: ``points``,
  unversioned (served as version 1), and ``undeclared``, whose metadata has no signature and
  which the gateway therefore leaves out.

When MLServer stops, the gateway refuses its model with 503 and ``Retry-After`` and keeps
serving Triton's.

Each runs from a virtual environment of its own in the user's cache (tests/e2e/peer_envs.py),
made on the first run on a machine (30 s to 5 minutes each on a shared 2-core machine) and
reused by every later run and checkout.
One set of servers serves the module's tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import ADMIN_KEY, AUTH, RunningServer, free_port, start_server, stop_server
from tests.e2e.peer_envs import peer_python

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent / "oip_nodes"
#: a tenant's plan: 4 requests at once, then one per 100 s
BURST = 4


@dataclass
class Peer:
    process: subprocess.Popen[bytes]
    http: str
    grpc: str
    log: Path


@dataclass
class Front:
    gateway: RunningServer
    triton: Peer
    mlserver: Peer
    key: str
    tenant: str


def _libdir(python: Path) -> str:
    """The folder of the venv interpreter's own ``libpython3.X.so``."""
    done = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _tritonserver_runs(python: Path, env: dict[str, str]) -> None:
    """Skip (with the loader's own words) only when the binary cannot run on this machine:
    the wheel is built for glibc 2.35 and x86-64 Linux."""
    binary = next((python.parent.parent / "lib").glob("python3*/site-packages/pytriton"))
    binary = binary / "tritonserver" / "bin" / "tritonserver"
    done = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    text = done.stdout + done.stderr
    if done.returncode != 0 and ("GLIBC" in text or "error while loading" in text):
        pytest.skip(f"PyTriton's tritonserver cannot run on this machine: {text[-2000:]}")
    assert "Usage: tritonserver" in text, text[-2000:]


def _start(command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> Any:
    with open(log, "wb") as out:
        # a session of its own: Triton runs as a child of PyTriton, MLServer may fork
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )


def _wait_ready(peer: Peer, path: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.process.poll() is not None:
            pytest.fail(f"{peer.log.name} exited:\n{peer.log.read_text()[-4000:]}")
        try:
            if httpx.get(f"http://{peer.http}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{peer.log.name} not ready in {timeout}s:\n{peer.log.read_text()[-4000:]}")


def _stop(peer: Peer) -> None:
    """SIGTERM to the peer's whole session (PyTriton passes it to Triton), then SIGKILL."""
    try:
        os.killpg(peer.process.pid, signal.SIGTERM)
        peer.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(peer.process.pid, signal.SIGKILL)
    peer.process.wait()


def _cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [sysconfig.get_path("scripts") + "/python", "-m", "modelgate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MODELGATE_DATA_DIR": str(data_dir)},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    root = tmp_path_factory.mktemp("third-party")
    triton_python = peer_python("pytriton-venv", HERE / "pytriton-requirements.txt")
    mlserver_python = peer_python("mlserver-venv", HERE / "mlserver-requirements.txt")
    # The Python backend's stub links libpython3.X.so.1.0; the loader would find the
    # system's first (Debian's 3.11.2), older than the venv's standard library (pyenv's
    # 3.11.7): the model then fails to load in multiprocessing. The venv's own comes first.
    triton_env = {**os.environ, "LD_LIBRARY_PATH": _libdir(triton_python)}
    _tritonserver_runs(triton_python, triton_env)

    peers: list[Peer] = []
    gateway = None
    try:
        ports = [free_port() for _ in range(3)]
        triton = Peer(
            _start(
                [str(triton_python), str(HERE / "triton_node.py"), *map(str, ports),
                 str(root / "triton-workspace")],
                root / "triton.log",
                triton_env,
            ),
            f"127.0.0.1:{ports[0]}",
            f"127.0.0.1:{ports[1]}",
            root / "triton.log",
        )  # fmt: skip
        peers.append(triton)
        models = root / "mlserver"
        subprocess.run(
            [str(mlserver_python), str(HERE / "sklearn_model.py"), str(models)],
            check=True,
            timeout=120,
        )
        ports = [free_port() for _ in range(3)]
        (models / "settings.json").write_text(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "http_port": ports[0],
                    "grpc_port": ports[1],
                    "metrics_port": ports[2],
                    "parallel_workers": 0,
                }
            )
        )
        mlserver = Peer(
            _start(
                [str(mlserver_python.parent / "mlserver"), "start", str(models)],
                root / "mlserver.log",
                dict(os.environ),
                cwd=models,
            ),
            f"127.0.0.1:{ports[0]}",
            f"127.0.0.1:{ports[1]}",
            root / "mlserver.log",
        )
        peers.append(mlserver)
        _wait_ready(triton, "/v2/models/affine/ready")
        _wait_ready(mlserver, "/v2/models/points/ready")

        data_dir = root / "gateway" / "data"  # start_server's --data-dir
        _cli(data_dir, "plans", "create", "small", "--rps", "0.01", "--burst", str(BURST))
        tenant = _cli(data_dir, "tenants", "create", "acme", "--plan", "small").split()[-1]
        key = _cli(data_dir, "keys", "create", "--tenant", tenant, "--name", "app").split()[-1]
        empty = root / "no-models"
        empty.mkdir()
        gateway = start_server(
            empty,
            root / "gateway",
            "--role",
            "gateway",
            env={
                "MODELGATE_NODES": f"{triton.grpc},{mlserver.grpc}",
                "MODELGATE_NODE_MODELS": "affine",
                "MODELGATE_CLUSTER_REFRESH_SECONDS": "0.5",
                "MODELGATE_USAGE_FLUSH_SECONDS": "0.2",
            },
        )
        deadline = time.monotonic() + 30
        while True:  # the gateway found both models (each loads on its first request)
            index = httpx.post(f"{gateway.url}/v2/repository/index", headers=AUTH, json={})
            if {"affine", "points"} <= {m["name"] for m in index.json()}:
                break
            assert time.monotonic() < deadline, index.text
            time.sleep(0.2)
        yield Front(gateway, triton, mlserver, key, tenant)
    finally:
        if gateway is not None:
            stop_server(gateway)
        for peer in peers:
            _stop(peer)


def _grpc_infer(front: Front, model: str, name: str, array: np.ndarray, key: str) -> Any:
    client = grpcclient.InferenceServerClient(front.gateway.grpc_address)
    try:
        datatype = "FP32" if array.dtype == np.float32 else "INT64"
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return client.infer(model, [tensor], headers={"authorization": f"Bearer {key}"})
    finally:
        client.close()


def test_a_triton_model_and_an_mlserver_model_through_the_gateway_over_rest_and_grpc(
    front: Front,
) -> None:
    url = front.gateway.url
    # the signatures the gateway read from each server's metadata
    meta = httpx.get(f"{url}/v2/models/affine", headers=AUTH).json()
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [("x", "FP32")]
    meta = httpx.get(f"{url}/v2/models/points", headers=AUTH).json()
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("features", "FP32", [-1, 2])
    ]
    # left out: MLServer's metadata for it names no inputs
    listed = httpx.post(f"{url}/v2/repository/index", headers=AUTH, json={}).json()
    names = {m["name"] for m in listed}
    assert {"affine", "points"} <= names and "undeclared" not in names

    answer = httpx.post(
        f"{url}/v2/models/affine/infer",
        headers=AUTH,
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3],
                          "data": [1, 2, 3, 4, 5, 6]}]},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [3.0, 5.0, 7.0, 9.0, 11.0, 13.0]
    # unversioned on MLServer, version 1 on the gateway (by its route too)
    for path in ("/v2/models/points/infer", "/v2/models/points/versions/1/infer"):
        answer = httpx.post(
            f"{url}{path}",
            headers=AUTH,
            json={"inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 2],
                              "data": [0, 0, 3, 3, 0.5, 0]}]},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        (output,) = answer.json()["outputs"]
        assert output["name"] == "predict" and output["data"] == [0, 1, 0]

    result = _grpc_infer(front, "affine", "x", np.array([[0.5, -1.0]], dtype=np.float32), ADMIN_KEY)
    assert result.as_numpy("y").tolist() == [[2.0, -1.0]]
    result = _grpc_infer(
        front, "points", "features", np.array([[3, 2], [0, 1]], dtype=np.float32), ADMIN_KEY
    )
    assert result.as_numpy("predict").ravel().tolist() == [1, 0]

    # validated on the gateway against the node's signature: refused without a node call
    bad = httpx.post(
        f"{url}/v2/models/points/infer",
        headers=AUTH,
        json={"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3],
                          "data": [1, 2, 3]}]},
    )  # fmt: skip
    assert bad.status_code == 400 and "features" in bad.json()["error"], bad.text
    with pytest.raises(InferenceServerException) as refused:
        _grpc_infer(front, "points", "features", np.ones((1, 3), np.float32), ADMIN_KEY)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_a_tenant_key_is_limited_and_metered_in_front_of_third_party_nodes(
    front: Front,
) -> None:
    url = front.gateway.url
    headers = {"Authorization": f"Bearer {front.key}"}
    row = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}]}
    assert httpx.post(f"{url}/v2/models/affine/infer", json=row).status_code == 401
    codes = []
    for i in range(BURST + 2):
        if i % 2:  # the same key over gRPC: one bucket for both protocols
            try:
                _grpc_infer(front, "affine", "x", np.ones((1, 1), np.float32), front.key)
                codes.append(200)
            except InferenceServerException as exc:
                status = exc.status()
                codes.append(429 if status == "StatusCode.RESOURCE_EXHAUSTED" else status)
        else:
            answer = httpx.post(f"{url}/v2/models/affine/infer", json=row, headers=headers)
            codes.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) > 0
    assert codes == [200] * BURST + [429, 429]

    # the admitted requests are in the tenant's usage, by model, once flushed
    deadline = time.monotonic() + 15
    while True:
        usage = httpx.get(
            f"{url}/admin/usage",
            headers=AUTH,
            params={"tenant": front.tenant, "group_by": "model"},
        )
        assert usage.status_code == 200, usage.text
        rows = {r["model"]: r for r in usage.json()["rows"]}
        if rows.get("affine", {}).get("requests", 0) >= BURST + 2:
            break
        assert time.monotonic() < deadline, usage.text
        time.sleep(0.3)
    assert rows["affine"]["rows"] == BURST
    assert rows["affine"]["requests"] - rows["affine"]["errors"] == BURST


def test_a_third_party_node_that_stops_is_left_out_and_the_other_keeps_serving(
    front: Front,
) -> None:
    """Runs last: it stops MLServer. Its model is refused with 503 and Retry-After in the
    gateway's own words (never a 500, never a node's address); Triton's is still served."""
    _stop(front.mlserver)
    row = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 2], "data": [3, 3]}]}
    deadline = time.monotonic() + 15
    while True:
        # a model the gateway has served waits for a node to announce it again (the
        # cold-start wait, MODELGATE_COLD_START_WAIT_SECONDS, 5 s) before its 503: more than
        # httpx's default 5 s read timeout
        answer = httpx.post(
            f"{front.gateway.url}/v2/models/points/infer", json=row, headers=AUTH, timeout=30
        )
        assert answer.status_code in (200, 503), answer.text
        if answer.status_code == 503:
            break
        assert time.monotonic() < deadline, "the stopped node's model is still served"
        time.sleep(0.2)
    assert answer.headers["retry-after"] == "1"
    assert front.mlserver.grpc not in answer.text
    index = httpx.post(f"{front.gateway.url}/v2/repository/index", headers=AUTH, json={})
    assert "points" not in {m["name"] for m in index.json() if m.get("state") == "READY"}
    affine = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [2]}]}
    answer = httpx.post(f"{front.gateway.url}/v2/models/affine/infer", json=affine, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [5.0]
