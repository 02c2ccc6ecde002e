"""PostgreSQL going away under a running modelgate: the server reaches its own database on
the machine's PostgreSQL through a TCP fault proxy (tests/faultproxy.py), so the database
server itself stays up for everyone else. While the proxy refuses connections, and while
it silently drops packets: a key the server has seen keeps working from its cache, a key
it has not seen is never admitted (503, not 401 and never 200), and the usage of the
requests served meanwhile is written once the database is back (none lost)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.conftest import FIXTURE_MODELS
from tests.e2e.conftest import AUTH, admin_sql, run_cli, start_server, stop_server
from tests.faultproxy import FaultProxy

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def _key(env: dict[str, str], tenant: str, name: str) -> str:
    return run_cli(env, "keys", "create", "--tenant", tenant, "--name", name).split()[-1]


def test_known_keys_keep_working_and_unknown_ones_never_get_in_while_postgres_is_away(
    postgres_behind_proxy: tuple[str, FaultProxy], tmp_path: Path
) -> None:
    direct, proxy = postgres_behind_proxy
    host_port = direct.split("@", 1)[1].split("/", 1)[0]
    through_proxy = direct.replace(host_port, f"127.0.0.1:{proxy.port}")
    cli_env = {"MODELGATE_DATABASE_URL": direct}
    server = start_server(
        FIXTURE_MODELS,
        tmp_path,
        env={
            "MODELGATE_DATABASE_URL": through_proxy,
            "MODELGATE_KEY_CACHE_SECONDS": "60",
            "MODELGATE_USAGE_FLUSH_SECONDS": "0.5",
        },
    )
    try:
        run_cli(cli_env, "plans", "create", "basic", "--rps", "1000")
        tenant = run_cli(cli_env, "tenants", "create", "acme", "--plan", "basic").split()[-1]
        known, unseen = _key(cli_env, tenant, "known"), _key(cli_env, tenant, "unseen")
        infer = f"{server.url}/v2/models/doubler/infer"

        def call(key: str) -> httpx.Response:
            return httpx.post(
                infer, json=ROW, headers={"Authorization": f"Bearer {key}"}, timeout=30
            )

        assert call(known).status_code == 200  # seen once: cached
        served = 1
        for mode in ("refuse", "blackhole"):
            proxy.set(mode)  # type: ignore[arg-type]
            for _ in range(20):
                assert call(known).status_code == 200
                served += 1
            started = time.monotonic()
            refused = call(unseen)
            waited = time.monotonic() - started
            print(
                f"\nPostgreSQL {mode}: known key 20/20 served; unseen key "
                f"{refused.status_code} after {waited * 1000:.0f} ms"
            )
            assert refused.status_code == 503, refused.text
            assert refused.headers.get("retry-after") == "1"
            assert waited < 5.0  # the key lookup's own timeout (2 s), not the driver's
            if mode == "refuse":  # the admin API: 503, never 500, for a read and a write
                for method, path, body in (
                    ("GET", "/admin/tenants", None),
                    ("POST", "/admin/tenants", {"name": "during-the-outage", "plan": "basic"}),
                ):
                    answer = httpx.request(
                        method, f"{server.url}{path}", json=body, headers=AUTH, timeout=30
                    )
                    assert answer.status_code == 503, (method, path, answer.text)
                    assert answer.headers.get("retry-after") == "1"
        proxy.set("pass")
        deadline = time.monotonic() + 30
        while call(unseen).status_code != 200:  # the pool reconnects
            assert time.monotonic() < deadline
            time.sleep(0.2)
        served += 1
        # every request served while the database was away is in the usage records
        deadline = time.monotonic() + 30
        while True:
            total = asyncio.run(
                admin_sql(
                    direct,
                    "SELECT coalesce(sum(requests), 0) FROM usage_records "
                    f"WHERE tenant_id = '{tenant}' AND status = 'ok'",
                )
            )
            if total == served or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"usage recorded after the outage: {total} of {served} requests")
        assert total == served
    finally:
        proxy.set("pass")
        assert stop_server(server) == 0
