"""The public surface: what ``modelgate_client`` exports is what the docs promise, each
with a docstring (the API reference is generated from them), and it imports without numpy."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import modelgate_client

EXPECTED = {
    "DEFAULT_TIMEOUT", "APIError", "AsyncClient", "AsyncDeployments", "AsyncJobs",
    "AuthenticationError", "BadRequestError", "Client", "ConflictError", "ConnectionError",
    "Deployment", "Deployments", "Embeddings", "Explanation", "FeedbackItem", "InferResult",
    "Job", "JobPage", "JobProgress", "JobResult", "Jobs", "ModelInfo", "ModelMetadata",
    "ModelgateError",
    "NotFoundError", "PermissionDeniedError", "Quota", "RateLimitError", "RetryPolicy",
    "ServerError", "TensorMetadata", "TextProgress", "TimeoutError", "UsageReport", "UsageRow",
    "__version__", "job_request",
}  # fmt: skip


def test_the_exports_are_the_documented_ones() -> None:
    assert set(modelgate_client.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(modelgate_client, name), name


def test_every_public_class_function_and_method_has_a_docstring() -> None:
    missing = []
    for name in modelgate_client.__all__:
        value = getattr(modelgate_client, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if not inspect.getdoc(value):
            missing.append(name)
        if (
            inspect.isclass(value)
            and issubclass(value, object)
            and name.endswith(("Client", "Jobs", "Deployments"))
        ):
            for attr, member in vars(value).items():
                if not attr.startswith("_") and callable(member) and not member.__doc__:
                    missing.append(f"{name}.{attr}")
    assert missing == []


def test_the_exception_tree() -> None:
    m = modelgate_client
    for kind in (m.BadRequestError, m.AuthenticationError, m.PermissionDeniedError,
                 m.NotFoundError, m.ConflictError, m.RateLimitError, m.ServerError):  # fmt: skip
        assert issubclass(kind, m.APIError)
    assert issubclass(m.APIError, m.ModelgateError)
    assert issubclass(m.TimeoutError, m.ModelgateError) and issubclass(m.TimeoutError, TimeoutError)
    assert issubclass(m.ConnectionError, m.ModelgateError)
    assert issubclass(m.ConnectionError, ConnectionError)


def test_everything_but_infer_works_without_numpy() -> None:
    script = """
import sys
sys.modules["numpy"] = None  # as if it were not installed
import httpx
from modelgate_client import Client
def answer(request):
    return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})
with Client("http://modelgate.test", transport=httpx.MockTransport(answer)) as client:
    assert [m.id for m in client.models()] == ["m"]
    try:
        client.infer("m", {"x": [1.0]})
    except ImportError as exc:
        print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'modelgate-client[numpy]'" in done.stdout


def test_the_sdk_imports_only_httpx_numpy_and_the_standard_library() -> None:
    allowed = {"httpx", "numpy", "modelgate_client", *sys.stdlib_module_names}
    package = Path(modelgate_client.__file__).parent
    found: dict[str, str] = {}
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found[name.split(".")[0]] = module.name
    assert {name: where for name, where in found.items() if name not in allowed} == {}
    assert {"httpx", "numpy"} <= set(found)
