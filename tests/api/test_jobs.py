"""``/v1/jobs`` end to end in process: the REST app on the real SQLite stores, with the
worker's steps run by the test (``run_once``), so nothing waits on a clock.

Covers submission (one request, a batch, JSON lines), idempotency keys, results per item,
cancellation, another tenant's job (404), the dead letter (a model that always fails),
a lost lease taken over by another worker, the signed webhook received by a local server,
SSRF refusals, and property-based bad input (never a 5xx)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.core.jobs.worker import JobWorker
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "webhook-secret-" + "s" * 16
ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
FAILING = """
from modelgate.model import PythonModel


class AlwaysFails(PythonModel):
    def predict(self, inputs):
        raise RuntimeError("this model always fails")
"""


@dataclass
class World:
    components: Components
    client: httpx.AsyncClient
    keys: dict[str, dict[str, str]]

    @property
    def worker(self) -> JobWorker:
        assert self.components.jobs is not None
        return self.components.jobs.worker

    async def drain(self) -> int:
        """Run queued jobs until none is left; the number run."""
        runs = 0
        while await self.worker.run_once():
            runs += 1
        return runs


class Receiver:
    """A local HTTP server that records webhook deliveries."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        received = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _key(components: Components, tenant: str, name: str) -> dict[str, str]:
    assert components.state is not None
    issued = issue_key()
    record = ApiKeyRecord(
        id=f"key_{name}",
        tenant_id=tenant,
        name=name,
        prefix=issued.prefix,
        key_hash=issued.key_hash,
        scopes=("infer", "models:read"),
        created_at=datetime.now(UTC),
    )
    await components.state.identity.create_key(record)
    return {"Authorization": f"Bearer {issued.secret}"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("jobs")
    repository = root / "models"
    shutil.copytree(FIXTURE_MODELS, repository)
    failing = repository / "always-fails"
    (failing / "1").mkdir(parents=True)
    (failing / "1" / "model.py").write_text(FAILING)
    (failing / "model.yaml").write_text(
        "runtime: python\nartifact: model.py\nruntime_options: {class: AlwaysFails}\n"
        "inputs:\n  - {name: x, datatype: FP32, shape: [-1, 4]}\n"
        "outputs:\n  - {name: y, datatype: FP32, shape: [-1, 4]}\n"
    )
    settings = Settings(
        model_repository=repository,
        data_dir=root / "data",
        admin_key="jobs-admin-" + "a" * 24,
        webhook_secret=SECRET,
        jobs_webhook_allow_private=True,  # the receiver is on 127.0.0.1
        jobs_max_attempts=2,
        jobs_retry_backoff_seconds=0,
        jobs_lease_seconds=30,
        abuse_slow_after=1_000_000,  # the property tests send many bad requests on purpose
        abuse_block_after=1_000_000,
        log_level="warning",
    )
    components = build_components(settings)
    await components.open()
    await components.registry.start()
    assert components.state is not None
    identity = components.state.identity
    await identity.create_plan(Plan("basic"))
    keys = {}
    for name in ("acme", "globex"):
        tenant = Tenant(f"ten_{name}", name, "basic", datetime.now(UTC))
        await identity.create_tenant(tenant)
        keys[name] = await _key(components, tenant.id, name)
    transport = httpx.ASGITransport(app=components.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield World(components, client, keys)
    await components.close()


async def _submit(
    world: World, body: Any, who: str = "acme", headers: dict[str, str] | None = None
) -> httpx.Response:
    headers = {**world.keys[who], **(headers or {})}
    return await world.client.post("/v1/jobs", json=body, headers=headers)


async def test_one_inference_runs_later_and_its_result_is_kept(world: World) -> None:
    body = {"model": "doubler", "version": "1", "request": ROW, "priority": 3}
    response = await _submit(world, body)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "queued" and job["priority"] == 3
    assert job["progress"] == {"total": 1, "completed": 0, "failed": 0}
    assert await world.drain() == 1
    done = (await world.client.get(f"/v1/jobs/{job['id']}", headers=world.keys["acme"])).json()
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["progress"] == {"total": 1, "completed": 1, "failed": 0}
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]
    results = await world.client.get(f"/v1/jobs/{job['id']}/results", headers=world.keys["acme"])
    (item,) = results.json()["data"]
    assert item["status"] == "ok"
    outputs = {o["name"]: o["data"] for o in item["response"]["outputs"]}
    assert outputs["y"] == [2, 4, 6, 8]


async def test_a_batch_as_json_lines_answers_per_item(world: World) -> None:
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    lines = b"\n".join(orjson.dumps(r) for r in (ROW, bad, ROW))
    response = await world.client.post(
        "/v1/jobs?model=doubler&priority=1",
        content=lines,
        headers={**world.keys["acme"], "content-type": "application/jsonl"},
    )
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    await world.drain()
    results = await world.client.get(
        f"/v1/jobs/{job_id}/results?limit=2", headers=world.keys["acme"]
    )
    page = results.json()
    assert [r["status"] for r in page["data"]] == ["ok", "error"]
    assert page["data"][1]["error"]["code"] == "invalid_argument"
    assert page["has_more"] and page["next_after"] == 1
    rest = await world.client.get(f"/v1/jobs/{job_id}/results?after=1", headers=world.keys["acme"])
    assert [r["index"] for r in rest.json()["data"]] == [2]
    job = (await world.client.get(f"/v1/jobs/{job_id}", headers=world.keys["acme"])).json()
    assert job["status"] == "succeeded"
    assert job["progress"] == {"total": 3, "completed": 2, "failed": 1}


async def test_the_same_idempotency_key_answers_the_same_job(world: World) -> None:
    body = {"model": "doubler", "requests": [ROW, ROW]}
    headers = {"Idempotency-Key": "order-42"}
    first = await _submit(world, body, headers=headers)
    second = await _submit(world, body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    other = await _submit(world, {**body, "priority": 9}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["message"].startswith("this Idempotency-Key was used")
    # another tenant's same key is its own job
    theirs = await _submit(world, body, "globex", headers=headers)
    assert theirs.json()["id"] != first.json()["id"]
    await world.drain()


async def test_another_tenants_job_is_not_found(world: World) -> None:
    job_id = (await _submit(world, {"model": "doubler", "request": ROW})).json()["id"]
    theirs = world.keys["globex"]
    for method, path in (
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/results"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
    ):
        response = await world.client.request(method, path, headers=theirs)
        assert response.status_code == 404
        # exactly what a job that does not exist answers (no model_not_found code)
        error = response.json()["error"]
        assert error["message"] == f"No job found with id '{job_id}'"
        assert error["type"] == "invalid_request_error" and error["code"] is None
    listed = (await world.client.get("/v1/jobs", headers=theirs)).json()["data"]
    assert job_id not in {j["id"] for j in listed}
    await world.drain()


async def test_cancel_a_queued_job(world: World) -> None:
    job_id = (await _submit(world, {"model": "doubler", "request": ROW})).json()["id"]
    cancelled = await world.client.post(f"/v1/jobs/{job_id}/cancel", headers=world.keys["acme"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert await world.drain() == 0  # nothing runs it
    again = await world.client.post(f"/v1/jobs/{job_id}/cancel", headers=world.keys["acme"])
    assert again.status_code == 200  # cancelling a cancelled job is idempotent
    listed = await world.client.get("/v1/jobs?status=cancelled", headers=world.keys["acme"])
    assert job_id in {j["id"] for j in listed.json()["data"]}


async def test_a_model_that_always_fails_ends_in_the_dead_letter(world: World) -> None:
    job_id = (await _submit(world, {"model": "always-fails", "request": ROW})).json()["id"]
    assert await world.drain() == 2  # jobs_max_attempts=2, no backoff
    job = (await world.client.get(f"/v1/jobs/{job_id}", headers=world.keys["acme"])).json()
    assert job["status"] == "dead" and job["attempts"] == 2
    # the model fails its warm-up, so its load fails with the model's own message
    assert "this model always fails" in job["error"]
    dead = await world.client.get("/v1/jobs?status=dead", headers=world.keys["acme"])
    assert [j["id"] for j in dead.json()["data"]] == [job_id]


async def test_a_lost_lease_is_taken_over_by_another_worker(world: World) -> None:
    job_id = (await _submit(world, {"model": "doubler", "requests": [ROW, ROW]})).json()["id"]
    jobs = world.components.jobs
    assert jobs is not None
    now = datetime.now(UTC)
    lease = jobs.service.policy.lease_s
    # a worker claims the job, then dies without a word
    assert await jobs.service.queue.claim("dead-worker", now, lease) is not None
    later = now + timedelta(seconds=lease + 1)
    survivor = JobWorker(
        jobs.service.queue,
        world.components.service,
        jobs.worker.principals,
        jobs.worker._decode,
        jobs.worker._encode,
        jobs.service.policy,
        worker_id="survivor",
        now=lambda: later,  # the injected clock: past the dead worker's lease
    )
    assert await survivor.run_once()
    job = (await world.client.get(f"/v1/jobs/{job_id}", headers=world.keys["acme"])).json()
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert job["progress"]["completed"] == 2


async def test_a_finished_job_is_deleted_when_its_retention_ends(world: World) -> None:
    done = (await _submit(world, {"model": "doubler", "request": ROW})).json()["id"]
    await world.drain()
    waiting = (await _submit(world, {"model": "doubler", "request": ROW})).json()["id"]
    jobs = world.components.jobs
    assert jobs is not None
    policy = jobs.service.policy
    later = datetime.now(UTC) + timedelta(seconds=policy.retention_s + 1)
    purger = JobWorker(
        jobs.service.queue,
        world.components.service,
        jobs.worker.principals,
        jobs.worker._decode,
        jobs.worker._encode,
        policy,
        worker_id="purger",
        now=lambda: later,  # the injected clock: past the finished job's retention
    )
    assert await purger.purge() >= 1
    headers = world.keys["acme"]
    assert (await world.client.get(f"/v1/jobs/{done}", headers=headers)).status_code == 404
    results = await world.client.get(f"/v1/jobs/{done}/results", headers=headers)
    assert results.status_code == 404
    # a job that has not ended is kept, however old
    kept = await world.client.get(f"/v1/jobs/{waiting}", headers=headers)
    assert kept.status_code == 200 and kept.json()["status"] == "queued"
    await world.drain()


async def test_the_webhook_is_signed_and_received(world: World, receiver: Receiver) -> None:
    body = {"model": "doubler", "request": ROW, "webhook_url": receiver.url}
    job_id = (await _submit(world, body)).json()["id"]
    await world.drain()
    jobs = world.components.jobs
    assert jobs is not None
    pending = list(jobs.notifier.sender._pending)
    if pending:
        await asyncio.wait(pending)
    headers, raw = next((h, b) for h, b in receiver.deliveries if job_id.encode() in b)
    assert headers["x-modelgate-event"] == "job.succeeded"
    stamp, mac = headers["x-modelgate-signature"].split(",")
    timestamp = stamp.removeprefix("t=")
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    assert mac == "v1=" + expected.hexdigest()
    event = orjson.loads(raw)
    assert event["type"] == "job.succeeded" and event["job"]["id"] == job_id


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost/hook",
    ],
)
async def test_webhooks_to_private_addresses_are_refused(world: World, url: str) -> None:
    jobs = world.components.jobs
    assert jobs is not None
    policy = jobs.service.policy
    jobs.service.policy = dataclasses.replace(policy, webhook_allow_private=False)
    try:
        response = await _submit(world, {"model": "doubler", "request": ROW, "webhook_url": url})
    finally:
        jobs.service.policy = policy
    assert response.status_code == 400, response.text
    assert "webhooks may only call public addresses" in response.json()["error"]["message"]


async def test_the_notifier_checks_the_address_again_at_delivery(receiver: Receiver) -> None:
    from modelgate.notify.jobs import JobNotifier

    notifier = JobNotifier(secret=None, timeout_s=2, allow_private=False, attempts=1)
    try:
        delivered = await notifier.sender.deliver("job.succeeded", {}, url=receiver.url)
    finally:
        await notifier.close()
    assert not delivered


async def test_unknown_models_and_missing_credentials_are_refused(world: World) -> None:
    unknown = await _submit(world, {"model": "nope", "request": ROW})
    assert unknown.status_code == 404
    anonymous = await world.client.post("/v1/jobs", json={"model": "doubler", "request": ROW})
    assert anonymous.status_code == 401
    assert (await world.client.get("/v1/jobs/x/y/z", headers=world.keys["acme"])).status_code == 404
    method = await world.client.delete("/v1/jobs", headers=world.keys["acme"])
    assert method.status_code == 405


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
_job_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["doubler", "", "nope"]) | st.text(max_size=5) | _json_values,
        "version": st.sampled_from(["1", "2", "9"]) | _json_values,
        "request": st.just(ROW) | _json_values,
        "requests": st.lists(st.just(ROW) | _json_values, max_size=3) | _json_values,
        "priority": st.integers(-3, 12) | _json_values,
        "webhook_url": st.sampled_from(["ftp://x", "http://", "http://10.0.0.1/"]) | _json_values,
        "extra": _json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_job_bodies, query=st.sampled_from(["", "?model=doubler", "?limit=0", "?x=1"]))
async def test_bad_submissions_answer_4xx_never_5xx(
    world: World, body: dict[str, Any], query: str
) -> None:
    response = await world.client.post(f"/v1/jobs{query}", json=body, headers=world.keys["acme"])
    if response.status_code == 200:
        job_id = response.json()["id"]
        await world.client.post(f"/v1/jobs/{job_id}/cancel", headers=world.keys["acme"])
        return
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(["/v1/jobs", "/v1/jobs/job_x", "/v1/jobs/job_x/results"]),
    query=st.dictionaries(
        st.sampled_from(["status", "limit", "after", "model", "bogus"]),
        st.text(max_size=12),
        max_size=3,
    ),
)
async def test_bad_queries_answer_4xx_never_5xx(
    world: World, path: str, query: dict[str, str]
) -> None:
    response = await world.client.get(path, params=query, headers=world.keys["acme"])
    assert response.status_code < 500, response.text
