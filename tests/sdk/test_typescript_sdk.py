"""The TypeScript SDK (clients/typescript): installed with ``npm ci``, built with ``tsc``,
its generated types checked against the OpenAPI document, and its ``node --test`` suite run
against a real ``modelgate serve`` with tenants made for it.

Skipped, saying why, only where node or npm is missing or the npm registry cannot be reached
(``npm ci`` needs it the first time; npm's cache serves later runs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ADMIN_KEY, RunningServer
from tests.sdk.conftest import make_tenant

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
#: what npm says when it cannot reach the registry
_OFFLINE = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH", "network")


def _run(
    command: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=PACKAGE, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


@pytest.fixture(scope="module")
def built() -> Path:
    """``npm ci`` then ``npm run build``: the package's dist/."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are not installed: the TypeScript SDK is not tested")
    installed = _run([npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"], timeout=300)
    if installed.returncode != 0:
        if any(word in installed.stderr for word in _OFFLINE):
            pytest.skip(f"the npm registry cannot be reached: {installed.stderr.strip()[-500:]}")
        pytest.fail(f"npm ci failed:\n{installed.stdout}\n{installed.stderr}")
    build = _run([npm, "run", "build"], timeout=120)
    assert build.returncode == 0, f"npm run build failed:\n{build.stdout}\n{build.stderr}"
    return PACKAGE / "dist"


def test_the_generated_types_match_the_openapi_document(built: Path, tmp_path: Path) -> None:
    document = tmp_path / "openapi.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    dumped = subprocess.run(
        [sys.executable, "-m", "modelgate.boot.openapi", str(document)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert dumped.returncode == 0, dumped.stderr
    fresh = tmp_path / "schema.d.ts"
    generated = _run(["node", "scripts/generate.mjs", str(document), "--out", str(fresh)], 120)
    assert generated.returncode == 0, generated.stderr
    committed = (PACKAGE / "src" / "schema.d.ts").read_text(encoding="utf-8")
    assert fresh.read_text(encoding="utf-8") == committed, (
        "clients/typescript/src/schema.d.ts is out of date: run `npm run generate` in "
        "clients/typescript and commit it"
    )


def test_the_node_suite_against_a_real_server(built: Path, sdk_server: RunningServer) -> None:
    tenant = make_tenant(sdk_server, ["infer", "usage:read"], requests_per_day=1000)
    limited = make_tenant(sdk_server, ["infer"], requests_per_second=1, burst=1)
    env = {
        **os.environ,
        "MODELGATE_TEST_URL": sdk_server.url,
        "MODELGATE_TEST_ADMIN_KEY": ADMIN_KEY,
        "MODELGATE_TEST_TENANT_KEY": tenant.key,
        "MODELGATE_TEST_TENANT_ID": tenant.id,
        "MODELGATE_TEST_LIMITED_KEY": limited.key,
    }
    ran = _run(["node", "--test", "--test-reporter=spec", "test/"], timeout=240, env=env)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, f"node --test failed:\n{output[-20000:]}"
    # the spec reporter marks a suite that ran and passed with a check mark, a skipped one with "﹣"
    assert "✔ against a real server" in output, f"the server's suite did not run:\n{output}"


def _ts_examples() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "sdk-typescript.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```ts\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    return [(f"example{i}", block) for i, block in enumerate(blocks)]


#: a user's project: ESM, strict TypeScript, the package in node_modules
_TSCONFIG = """{"compilerOptions": {"target": "ES2022", "module": "NodeNext",
  "moduleResolution": "NodeNext", "lib": ["ES2022", "DOM"], "strict": true,
  "skipLibCheck": false}, "include": ["*.ts"]}"""


@pytest.fixture(scope="module")
def compiled_examples(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/sdk-typescript.md's examples compiled by ``tsc --strict`` in a project of their own
    that has the package in node_modules/@modelgate/client, as a user's would."""
    project = tmp_path_factory.mktemp("ts-examples")
    scope = project / "node_modules" / "@modelgate"
    scope.mkdir(parents=True)
    (scope / "client").symlink_to(PACKAGE, target_is_directory=True)
    (project / "package.json").write_text('{"type": "module", "private": true}')
    (project / "tsconfig.json").write_text(_TSCONFIG)
    for name, code in _ts_examples():
        (project / f"{name}.ts").write_text(code, encoding="utf-8")
    tsc = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
    ran = subprocess.run(
        ["node", str(tsc), "-p", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, f"the docs' examples do not compile:\n{ran.stdout}{ran.stderr}"
    return project


def test_the_docs_have_examples() -> None:
    assert len(_ts_examples()) >= 8


@pytest.mark.parametrize(("name", "code"), _ts_examples(), ids=[n for n, _ in _ts_examples()])
def test_the_docs_example_runs(
    compiled_examples: Path, sdk_server: RunningServer, name: str, code: str
) -> None:
    script = compiled_examples / f"{name}.js"
    script.write_text(
        script.read_text(encoding="utf-8").replace("http://localhost:8000", sdk_server.url)
    )
    env = {**os.environ, "MODELGATE_API_KEY": ADMIN_KEY}
    ran = subprocess.run(
        ["node", str(script)],
        cwd=compiled_examples,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert ran.returncode == 0, f"docs/sdk-typescript.md, {name}:\n{code}\n{ran.stdout}{ran.stderr}"
