"""PostgreSQL restarted under running jobs: a ``modelgate serve`` process, with its
in-process job worker, reaches its own database on the machine's PostgreSQL through the TCP
fault proxy (tests/faultproxy.py). Clients submit jobs all along (retrying a refused
submission with the same ``Idempotency-Key``, as a client should); mid-run the proxy
refuses every connection for about 3 s (a restart: open connections reset), later drops
packets for a moment. Afterwards every acknowledged job succeeds with exactly one result
per item: 0 lost, 0 duplicates, and no submission answered 500."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.conftest import FIXTURE_MODELS
from tests.e2e.conftest import AUTH, server_errors, start_server, stop_server
from tests.faultproxy import FaultProxy

ITEMS = 4
CLIENTS = 3
ROW = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}]}


def test_no_acknowledged_job_is_lost_or_doubled_when_postgres_restarts(
    postgres_behind_proxy: tuple[str, FaultProxy], tmp_path: Path
) -> None:
    direct, proxy = postgres_behind_proxy
    host_port = direct.split("@", 1)[1].split("/", 1)[0]
    through_proxy = direct.replace(host_port, f"127.0.0.1:{proxy.port}")
    server = start_server(
        FIXTURE_MODELS,
        tmp_path,
        env={
            "MODELGATE_DATABASE_URL": through_proxy,
            "MODELGATE_JOBS_LEASE_SECONDS": "6",
            "MODELGATE_JOBS_POLL_SECONDS": "0.1",
            "MODELGATE_JOBS_ITEM_CONCURRENCY": "1",
            "MODELGATE_JOBS_RETRY_BACKOFF_SECONDS": "0.5",
            "MODELGATE_LOG_FORMAT": "text",
        },
    )
    acknowledged: list[str] = []
    statuses: Counter[int] = Counter()
    retried = Counter[str]()
    stop = threading.Event()
    lock = threading.Lock()

    def submit(client_number: int) -> None:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
            number = 0
            while not stop.is_set():
                key = f"c{client_number}-{number}"
                body = {"model": "slow-sum", "requests": [ROW] * ITEMS}
                while True:  # a client retries what was not acknowledged, with its key
                    try:
                        answer = client.post(
                            "/v1/jobs", json=body, headers={"Idempotency-Key": key}
                        )
                        status = answer.status_code
                    except httpx.HTTPError:
                        status = 0
                    with lock:
                        statuses[status] += 1
                    if status in (200, 201, 202):
                        with lock:
                            acknowledged.append(answer.json()["id"])
                        break
                    with lock:
                        retried[key] += 1
                    time.sleep(0.2)
                number += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        proxy.set("refuse")  # PostgreSQL restarts: connections reset, new ones refused
        time.sleep(3.0)
        proxy.set("pass")
        time.sleep(2.0)
        proxy.set("blackhole")  # a short network stall
        time.sleep(1.0)
        proxy.set("pass")
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(120)
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
            deadline = time.monotonic() + 180
            while True:
                jobs = [client.get(f"/v1/jobs/{i}").json() for i in set(acknowledged)]
                if all(j["status"] not in ("queued", "running") for j in jobs):
                    break
                assert time.monotonic() < deadline, Counter(j["status"] for j in jobs)
                time.sleep(0.5)
            results = {
                i: client.get(f"/v1/jobs/{i}/results?limit=1000").json()["data"]
                for i in set(acknowledged)
            }
        indexes = {i: [r["index"] for r in items] for i, items in results.items()}
        unique = set(acknowledged)
        succeeded = sum(1 for j in jobs if j["status"] == "succeeded")
        lost = len(unique) - succeeded
        duplicates = sum(len(ix) - len(set(ix)) for ix in indexes.values())
        missing = sum(ITEMS - len(set(ix)) for ix in indexes.values())
        wrong = sum(
            1
            for items in results.values()
            for r in items
            if r["status"] != "ok" or r["response"]["outputs"][0]["data"] != [3]
        )
        attempts = Counter(j["attempts"] for j in jobs)
        print(
            f"\njobs acknowledged {len(unique)} (answers by status {dict(statuses)}, "
            f"submissions retried {sum(retried.values())}), succeeded {succeeded}, lost {lost}; "
            f"item results {sum(len(ix) for ix in indexes.values())} of {len(unique) * ITEMS}, "
            f"duplicates {duplicates}, missing {missing}, wrong {wrong}; "
            f"jobs by attempts {dict(sorted(attempts.items()))}"
        )
        assert len(unique) == len(acknowledged), "one key acknowledged two jobs"
        assert (lost, duplicates, missing, wrong) == (0, 0, 0, 0)
        assert statuses[500] == 0, f"a submission answered 500:\n{server_errors(server)}"
        assert server.process.poll() is None
    finally:
        stop.set()
        proxy.set("pass")
        assert stop_server(server) == 0
