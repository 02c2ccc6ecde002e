"""Reloading a model under load fails no request: a real server serves the demo
credit-risk model (copied into a temporary repository) to 6 concurrent clients for 3 s,
while the model is reloaded again and again through ``POST /v2/repository/models/{m}/load``
with the same files, then with a new version 3 added and made the default, then with the
same files again. Every request answers 200, and requests after the new version's
reload are answered by it. The figures are printed."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

from tests.e2e.conftest import AUTH, start_server, stop_server

CLIENTS = 6
RUN_S = 3.0
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


def test_reloads_under_load_fail_no_request(demo_models: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    model = repository / "credit-risk"
    shutil.copytree(demo_models / "credit-risk", model)
    server = start_server(repository, tmp_path / "server")
    try:
        infer = "/v2/models/credit-risk/infer"
        load = "/v2/repository/models/credit-risk/load"

        async def serve_and_reload() -> tuple[Counter[int], Counter[str], list[int]]:
            codes: Counter[int] = Counter()
            versions: Counter[str] = Counter()
            reloads: list[int] = []
            stop = time.monotonic() + RUN_S
            async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as c:

                async def client() -> None:
                    while time.monotonic() < stop:
                        answer = await c.post(infer, json=ROW)
                        codes[answer.status_code] += 1
                        if answer.status_code == 200:
                            versions[answer.json()["model_version"]] += 1

                async def reload_often() -> None:
                    for step in range(9):
                        await asyncio.sleep(0.25)
                        if step == 4:  # a new version, made the default
                            shutil.copytree(model / "1", model / "3")
                            manifest = model / "model.yaml"
                            data = yaml.safe_load(manifest.read_text())
                            data["default_version"] = 3
                            manifest.write_text(yaml.safe_dump(data))
                        answer = await c.post(load)
                        reloads.append(answer.status_code)

                await asyncio.gather(*(client() for _ in range(CLIENTS)), reload_often())
            return codes, versions, reloads

        codes, versions, reloads = asyncio.run(serve_and_reload())
        total = sum(codes.values())
        failed = total - codes[200]
        print(
            f"\n{CLIENTS} clients for {RUN_S:g} s, {len(reloads)} reloads "
            f"(statuses {dict(Counter(reloads))}, one adding version 3): {total} requests, "
            f"{failed} failed; answered by version {dict(sorted(versions.items()))}"
        )
        assert set(reloads) == {200}
        assert failed == 0, dict(codes)
        assert versions["3"] > 0 and versions["2"] > 0
        after = httpx.post(f"{server.url}{infer}", json=ROW, headers=AUTH, timeout=10)
        assert after.json()["model_version"] == "3"
    finally:
        assert stop_server(server) == 0
