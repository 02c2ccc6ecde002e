"""Explanations shared fairly between tenants, and refused before they cost anything, on a
real server (docs/explanations.md, "What it costs, and its limits"):

- while tenant A holds the only compute slot and its whole share of the queue, A's next
  explanation is refused (503) but tenant B's is admitted, and served before A's waiting
  ones;
- a refused explanation (503, 413, 429) runs no inference and bills nothing: the usage rows
  count only the answered ones;
- a plan created without ``explanations_per_minute`` gets the server's default budget, and
  a request for more rows than the plan's limit could ever allow answers the non-retryable
  413 (REST) / RESOURCE_EXHAUSTED without ``retry-after`` (gRPC), naming the limit.

The attributions are computed for real; the test holds them back (it wraps the computation
with a gate) only to see who waits and in which order they are served.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import pytest_asyncio
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.core.pipeline.explanations import EXPLAIN, Explanations
from modelgate.server import Server
from tests.api.conftest import running_server
from tests.api.test_explanations import APPLICANTS, explaining_repository

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-" + "y" * 24
#: the server's default rows explained per minute (plans without their own)
DEFAULT = 12


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    repository = explaining_repository(demo_models, tmp_path_factory.mktemp("models"))
    async with running_server(
        tmp_path_factory.mktemp("data"),
        model_repository=repository,
        auth="required",
        admin_key=ADMIN,
        usage_flush_seconds=0.2,
        explain_concurrency=1,
        explain_queue=2,
        explain_tenant_queue=2,
        explain_default_per_minute=DEFAULT,
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.http_port}", timeout=120
    ) as client:
        yield client


async def _tenant(http: httpx.AsyncClient, name: str, plan: dict[str, Any]) -> tuple[str, str]:
    """A new tenant on a new plan (``plan``: its limits): (its id, an inference key)."""
    made = await http.post("/admin/plans", json={"name": name, **plan}, headers=_as(ADMIN))
    assert made.status_code == 201, made.text
    tenant = await http.post(
        "/admin/tenants", json={"name": name, "plan": name}, headers=_as(ADMIN)
    )
    tid = tenant.json()["id"]
    key = await http.post(
        f"/admin/tenants/{tid}/keys", json={"scopes": ["infer"]}, headers=_as(ADMIN)
    )
    assert key.status_code == 201, key.text
    return tid, key.json()["secret"]


def _body(rows: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [len(rows), 12], "data": rows}
        ],
        "parameters": {EXPLAIN: True},
    }


async def _explain(http: httpx.AsyncClient, key: str, rows: list[list[float]]) -> httpx.Response:
    return await http.post(
        "/v2/models/credit-risk/versions/1/infer", json=_body(rows), headers=_as(key)
    )


async def _usage(
    http: httpx.AsyncClient, tenant: str, expected: tuple[int, int]
) -> tuple[int, int]:
    """(requests, rows explained) billed to ``tenant``, once the recorder wrote ``expected``
    (or after a while: then what it holds)."""
    got = (-1, -1)
    for _ in range(100):
        report = await http.get(
            "/admin/usage", params={"tenant": tenant, "group_by": "tenant"}, headers=_as(ADMIN)
        )
        assert report.status_code == 200, report.text
        rows = report.json()["rows"]
        got = (sum(r["requests"] for r in rows), sum(r["explanations"] for r in rows))
        if got == expected:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # two more flushes: nothing else arrives late
    report = await http.get(
        "/admin/usage", params={"tenant": tenant, "group_by": "tenant"}, headers=_as(ADMIN)
    )
    rows = report.json()["rows"]
    return sum(r["requests"] for r in rows), sum(r["explanations"] for r in rows)


class _Watch:
    """Wraps the running server's explanations: holds their computation behind a gate,
    notes whose rows are computed in which order, and counts the inferences each tenant's
    explanations ran."""

    def __init__(self, server: Server):
        assert server.components is not None
        self.service = server.components.service
        explanations = self.service.explanations
        assert isinstance(explanations, Explanations)
        self.explanations = explanations
        self.gate = threading.Event()
        self.computed: list[float] = []  # each explanation's first row's income
        self.inferences: dict[str, int] = {}
        compute: Callable[..., Any] = explanations._compute
        infer = self.service.infer

        def gated(loaded: Any, spec: Any, rows: np.ndarray[Any, Any]) -> Any:
            assert self.gate.wait(120)
            self.computed.append(float(rows[0, 1]))
            return compute(loaded, spec, rows)

        async def counted(request: Any, principal: Any, *args: Any, **kwargs: Any) -> Any:
            if EXPLAIN not in request.parameters and principal is not None:
                self.inferences[principal.tenant_id] = (
                    self.inferences.get(principal.tenant_id, 0) + 1
                )
            return await infer(request, principal, *args, **kwargs)

        explanations._compute = gated  # type: ignore[method-assign]
        self.service.infer = counted  # type: ignore[method-assign]
        self._restore = (compute, infer)

    def restore(self) -> None:
        self.gate.set()
        self.explanations._compute, self.service.infer = self._restore  # type: ignore[method-assign]

    async def until(self, held: int, waiting: int) -> None:
        slots = self.explanations._slots
        for _ in range(600):
            if slots.held == held and slots.waiting == waiting:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"slots: {slots.held} held, {slots.waiting} waiting")


async def test_tenant_b_is_served_while_tenant_a_saturates_its_share(
    server: Server, http: httpx.AsyncClient
) -> None:
    a, key_a = await _tenant(http, "tenant-a", {"explanations_per_minute": 100})
    b, key_b = await _tenant(http, "tenant-b", {"explanations_per_minute": 100})
    row_a, row_b = APPLICANTS[0], APPLICANTS[1]
    watch = _Watch(server)
    try:
        # A: the only slot (its computation held at the gate) and its whole share (2) waiting
        first = asyncio.create_task(_explain(http, key_a, [row_a]))
        await watch.until(held=1, waiting=0)
        waiting_a = [asyncio.create_task(_explain(http, key_a, [row_a])) for _ in range(2)]
        await watch.until(held=1, waiting=2)
        refused = await _explain(http, key_a, [row_a])
        assert refused.status_code == 503, refused.text
        assert "this tenant already has 2 explanations waiting" in refused.json()["error"]
        assert refused.headers["retry-after"] == "1"
        # the queue (2) is full, but B has nothing waiting: it waits with one
        explained_b = asyncio.create_task(_explain(http, key_b, [row_b]))
        await watch.until(held=1, waiting=3)
        assert watch.inferences.get(a, 0) == 1  # only the one holding the slot has run
    except BaseException:
        watch.restore()
        raise
    watch.gate.set()
    try:
        answers = await asyncio.gather(first, *waiting_a, explained_b)
    finally:
        watch.restore()
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    answer_b = answers[-1].json()
    names = [output["name"] for output in answer_b["outputs"]]
    assert "probabilities_attributions" in names
    # B was served before A's two waiting ones, though they came first
    assert watch.computed == [row_a[1], row_b[1], row_a[1], row_a[1]]
    # A's refused explanation ran no inference and is not billed
    assert watch.inferences == {a: 3, b: 1}
    assert await _usage(http, a, (3, 3)) == (3, 3)
    assert await _usage(http, b, (1, 1)) == (1, 1)


async def test_the_default_budget_applies_to_a_plan_created_without_one(
    server: Server, http: httpx.AsyncClient
) -> None:
    tenant, key = await _tenant(http, "no-explain-limit", {})
    plan = await http.get("/admin/plans", headers=_as(ADMIN))
    assert (
        next(p for p in plan.json() if p["name"] == "no-explain-limit")["explanations_per_minute"]
        is None
    )
    rows = (APPLICANTS * 5)[: DEFAULT + 1]
    over = await _explain(http, key, rows)
    # more rows than the plan's minute could ever hold: not worth a retry
    assert over.status_code == 413, over.text
    assert "retry-after" not in over.headers
    assert f"the plan allows {DEFAULT} explained rows per minute" in over.json()["error"]
    within = await _explain(http, key, rows[:DEFAULT])
    assert within.status_code == 200, within.text
    spent = await _explain(http, key, rows[:1])
    assert spent.status_code == 429, spent.text  # the minute's budget is used: retry later
    assert int(spent.headers["retry-after"]) >= 1
    # the refusals ran no inference and are not billed
    assert await _usage(http, tenant, (1, DEFAULT)) == (1, DEFAULT)


async def test_rows_over_the_plans_limit_are_not_retryable_over_grpc(
    server: Server, http: httpx.AsyncClient
) -> None:
    tenant, key = await _tenant(http, "grpc-limited", {"explanations_per_minute": 2})
    request = service_pb2.ModelInferRequest(model_name="credit-risk", model_version="1")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[3, 12])
    tensor.contents.fp32_contents.extend(np.asarray(APPLICANTS, np.float32).ravel().tolist())
    request.parameters[EXPLAIN].bool_param = True
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ModelInfer(request, metadata=(("authorization", f"Bearer {key}"),))
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the plan allows 2 explained rows per minute" in (error.details() or "")
    trailing = dict(error.trailing_metadata() or ())
    assert "retry-after" not in trailing  # a rate limit's answer carries one
    assert await _usage(http, tenant, (0, 0)) == (0, 0)


async def test_a_job_item_over_the_plans_limit_fails_at_once_and_costs_nothing(
    http: httpx.AsyncClient,
) -> None:
    """Not retried as a rate limit would be (every attempt would fail the same way)."""
    tenant, key = await _tenant(http, "job-limited", {"explanations_per_minute": 2})
    item = {
        "parameters": {EXPLAIN: True},
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 12], "data": APPLICANTS}],
    }
    body = {"model": "credit-risk", "version": "1", "requests": [item]}
    submitted = await http.post("/v1/jobs", json=body, headers=_as(key))
    assert submitted.status_code in (200, 201, 202), submitted.text
    job = submitted.json()["id"]
    for _ in range(600):
        status = (await http.get(f"/v1/jobs/{job}", headers=_as(key))).json()
        if status["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.1)
    results = (await http.get(f"/v1/jobs/{job}/results", headers=_as(key))).json()["data"]
    assert [r["status"] for r in results] == ["error"], results
    assert "the plan allows 2 explained rows per minute" in str(results[0]["error"])
    assert await _usage(http, tenant, (0, 0)) == (0, 0)
