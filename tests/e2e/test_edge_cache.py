"""A real nginx with ``proxy_cache`` in front of a real modelgate process: GET inference
of a model with a ``cache`` section is answered by nginx the second time without reaching
modelgate (counted in modelgate's /metrics), another credential is not served the first
one's entry (``Vary: Authorization``), and nginx answers ``If-None-Match`` with 304."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURE_MODELS
from tests.e2e.conftest import RunningServer, free_port, start_server, stop_server
from tests.nginx import running_nginx, temp_paths

KEY = "e2e-edge-cache-key-" + "e" * 16
AS_ADMIN = {"Authorization": f"Bearer {KEY}"}
CONFIG = """
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=modelgate_edge:1m max_size=16m
                     inactive=10m use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_cache modelgate_edge;
            proxy_cache_key $scheme$proxy_host$request_uri;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[tuple[str, RunningServer]]:
    server = start_server(FIXTURE_MODELS, tmp_path / "modelgate", env={"MODELGATE_ADMIN_KEY": KEY})
    try:
        prefix = tmp_path / "nginx"
        port = free_port()
        config = CONFIG.format(
            temp=temp_paths(prefix), prefix=prefix, port=port, upstream=server.http_address
        )
        url = f"http://127.0.0.1:{port}"
        with running_nginx(config, prefix, f"{url}/v2/health/live"):
            yield url, server
    finally:
        stop_server(server)


def query(doc: dict[str, Any]) -> str:
    raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def reached(server: RunningServer) -> float:
    """Requests of cached-doubler that reached modelgate (its own count)."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelgate_inference_requests_total{")
        and 'model="cached-doubler"' in line
    )


def test_a_repeat_get_is_answered_by_nginx_without_reaching_modelgate(
    edge: tuple[str, RunningServer],
) -> None:
    url, server = edge
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    path = f"{url}/v2/models/cached-doubler/infer?input={query(request)}"
    first = httpx.get(path, headers=AS_ADMIN, timeout=10)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache-status"] == "MISS"
    assert first.headers["cache-control"] == "public, max-age=300"
    assert first.json()["outputs"][0]["data"] == [2, 4, 6, 8]
    assert reached(server) == 1

    again = httpx.get(path, headers=AS_ADMIN, timeout=10)
    assert again.status_code == 200
    assert again.headers["x-cache-status"] == "HIT"
    assert again.content == first.content
    assert reached(server) == 1  # nginx answered

    revalidated = httpx.get(
        path, headers={**AS_ADMIN, "If-None-Match": first.headers["etag"]}, timeout=10
    )
    assert revalidated.status_code == 304
    assert reached(server) == 1

    # another credential is another variant (Vary: Authorization): it reaches modelgate,
    # which refuses a key it does not know
    stranger = httpx.get(path, headers={"Authorization": "Bearer mg_live_nope"}, timeout=10)
    assert stranger.status_code == 401
    assert stranger.headers["x-cache-status"] == "MISS"
