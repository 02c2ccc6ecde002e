"""A request that does not ask for an explanation pays nothing for them: a fresh server
process answers plain inferences without importing SHAP (about two seconds and a few hundred
MB of numba, scipy and pandas) and without running the explainer; the first KernelSHAP
explanation imports it. Run in a subprocess, since this test process may have imported SHAP
already (tests/unit/serving/test_attribution.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.api.test_explanations import explaining_repository
from tests.conftest import ROOT

SCRIPT = """
import asyncio, json, sys
from pathlib import Path

import httpx

from modelgate.boot.serving import build_components
from modelgate.settings import Settings

ROW = [1, 52000, 0.31, 0.45, 36, 5, 0, 15000, 36, 8, 1, 1]


async def main() -> None:
    components = build_components(
        Settings(model_repository=Path(sys.argv[1]), data_dir=Path(sys.argv[2]), auth="off")
    )
    await components.open()
    await components.start()
    seen = {}
    try:
        transport = httpx.ASGITransport(app=components.rest_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async def infer(version, parameters):
                body = {
                    "inputs": [
                        {"name": "features", "datatype": "FP32", "shape": [1, 12], "data": ROW}
                    ],
                    "parameters": parameters,
                }
                path = f"/v2/models/credit-risk/versions/{version}/infer"
                answer = await client.post(path, json=body)
                assert answer.status_code == 200, answer.text
                return [o["name"] for o in answer.json()["outputs"]]

            for version in ("1", "2"):
                for _ in range(20):
                    await infer(version, {})
            seen["plain_outputs"] = await infer("2", {"explain": False})
            explanations = components.service.explanations
            seen["after_plain"] = ["shap" in sys.modules, explanations.explained]
            await infer("1", {"explain": True})
            seen["after_linear"] = ["shap" in sys.modules, explanations.explained]
            seen["kernel_outputs"] = await infer("2", {"explain": True})
            seen["after_kernel"] = ["shap" in sys.modules, explanations.explained]
    finally:
        await components.close()
    print(json.dumps(seen))


asyncio.run(main())
"""


def test_plain_inference_never_imports_shap_nor_runs_the_explainer(
    demo_models: Path, tmp_path: Path
) -> None:
    repository = explaining_repository(demo_models, tmp_path / "models")
    (tmp_path / "models" / "all-MiniLM-L6-v2").unlink()  # not needed here: faster start
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(repository), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["plain_outputs"] == ["label", "probabilities"]
    assert seen["after_plain"] == [False, 0]
    assert seen["after_linear"] == [False, 1]  # the exact method needs no SHAP either
    assert seen["after_kernel"] == [True, 2]
    assert seen["kernel_outputs"] == ["label", "probabilities", "probabilities_attributions"]
