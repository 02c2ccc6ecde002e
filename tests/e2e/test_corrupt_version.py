"""A corrupt new model version reaches the repository of a running server under load: the
reload it triggers fails with a clear 400, and the versions already loaded keep answering
every request (none fails). The figure is printed."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

from tests.e2e.conftest import AUTH, start_server, stop_server

ROW = {
    "inputs": [
        {
            "name": "features",
            "datatype": "FP32",
            "shape": [1, 12],
            "data": [2.0, 55000.0, 0.3, 0.4, 36.0, 5.0, 0.0, 12000.0, 36.0, 8.0, 1.0, 1.0],
        }
    ]
}


def test_a_corrupt_new_version_leaves_the_old_ones_serving(
    demo_models: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    shutil.copytree(demo_models / "credit-risk", repository / "credit-risk")
    server = start_server(repository, tmp_path / "server")
    try:
        infer = "/v2/models/credit-risk/infer"

        async def load_and_break() -> tuple[Counter[int], httpx.Response]:
            codes: Counter[int] = Counter()
            stop = time.monotonic() + 3.0
            async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as c:

                async def worker() -> None:
                    while time.monotonic() < stop:
                        codes[(await c.post(infer, json=ROW)).status_code] += 1

                async def corrupt() -> httpx.Response:
                    await asyncio.sleep(0.5)
                    broken = repository / "credit-risk" / "3"
                    broken.mkdir()
                    (broken / "model.onnx").write_bytes(os.urandom(4096))  # not ONNX
                    manifest = repository / "credit-risk" / "model.yaml"
                    data = yaml.safe_load(manifest.read_text())
                    data["default_version"] = 3
                    manifest.write_text(yaml.safe_dump(data))
                    return await c.post("/v2/repository/models/credit-risk/load")

                *_, answer = await asyncio.gather(*(worker() for _ in range(6)), corrupt())
            return codes, answer

        codes, reload = asyncio.run(load_and_break())
        print(
            f"\ncorrupt version 3 under load: reload {reload.status_code}, requests {dict(codes)}"
        )
        assert reload.status_code == 400, reload.text
        assert "credit-risk" in reload.json()["error"]
        assert set(codes) == {200}
        served = httpx.post(f"{server.url}{infer}", json=ROW, headers=AUTH, timeout=10)
        assert served.json()["model_version"] == "2"
        index = httpx.post(f"{server.url}/v2/repository/index", headers=AUTH, timeout=10).json()
        assert {r["version"] for r in index if r["name"] == "credit-risk"} == {"1", "2"}
    finally:
        assert stop_server(server) == 0
