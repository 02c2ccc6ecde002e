"""``jobs.wait`` (polling, progress reports, its own timeout) and ``jobs.results`` (paged as
the iteration goes), sync and async, against scripted answers."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest

from modelgate_client import (
    AsyncClient,
    Client,
    Job,
    TextProgress,
    TimeoutError,
    _async_client,
    _client,
    job_request,
)
from modelgate_client.testing import MockTransport

URL = "http://modelgate.test"


def _job(status: str, completed: int, total: int = 4) -> dict[str, object]:
    progress = {"total": total, "completed": completed, "failed": 0}
    return {"id": "job_1", "model": "m", "status": status, "progress": progress}


def _scripted(*states: dict[str, object]) -> MockTransport:
    transport = MockTransport()
    answers = list(states)

    def status(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers.pop(0) if len(answers) > 1 else answers[0])

    transport.add_route("GET", "/v1/jobs/job_1", status)

    def results(request: httpx.Request) -> httpx.Response:
        after, limit = int(request.url.params["after"]), int(request.url.params["limit"])
        indexes = [i for i in range(after + 1, 5) if i < after + 1 + limit]
        data = [  # item 4 failed
            {"index": i, "status": "error", "error": {"code": "x"}}
            if i == 4
            else {"index": i, "status": "ok", "response": {"outputs": []}}
            for i in indexes
        ]
        body = {
            "object": "list",
            "job_id": "job_1",
            "status": "succeeded",
            "data": data,
            "has_more": len(data) == limit,
            "next_after": indexes[-1] if indexes else after,
        }
        return httpx.Response(200, json=body)

    transport.add_route("GET", "/v1/jobs/job_1/results", results)
    return transport


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    async def async_sleep(seconds: float) -> None:
        return None

    monkeypatch.setattr(_client, "_sleep", lambda seconds: None)
    monkeypatch.setattr(_async_client, "_sleep", async_sleep)


def test_wait_reports_each_change_once_and_returns_the_finished_job() -> None:
    transport = _scripted(
        _job("queued", 0), _job("running", 1), _job("running", 1), _job("running", 3),
        _job("succeeded", 4),
    )  # fmt: skip
    seen: list[Job] = []
    with Client(URL, transport=transport) as client:
        job = client.jobs.wait("job_1", poll_interval=0.01, on_progress=seen.append)
    assert job.status == "succeeded" and job.finished and job.progress.done == 4
    assert [(j.status, j.progress.completed) for j in seen] == [
        ("queued", 0), ("running", 1), ("running", 3), ("succeeded", 4),
    ]  # fmt: skip


def test_wait_gives_up_after_its_timeout() -> None:
    transport = _scripted(_job("running", 1))
    with Client(URL, transport=transport) as client, pytest.raises(TimeoutError, match="still"):
        client.jobs.wait("job_1", timeout=0.05, poll_interval=0.01)


def test_results_are_paged_in_item_order() -> None:
    transport = _scripted(_job("succeeded", 4))
    with Client(URL, transport=transport) as client:
        results = list(client.jobs.results("job_1", page_size=2))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.ok for r in results] == [True, True, True, True, False]
    assert results[-1].error == {"code": "x"} and results[0].response == {"outputs": []}
    afters = [r.url.params["after"] for r in transport.requests]
    assert afters == ["-1", "1", "3"]


async def test_the_async_jobs_alike() -> None:
    transport = _scripted(_job("running", 2), _job("failed", 2))
    async with AsyncClient(URL, transport=transport) as client:
        job = await client.jobs.wait("job_1", poll_interval=0.01)
        results = [r.index async for r in client.jobs.results("job_1")]
    assert job.status == "failed" and results == [0, 1, 2, 3, 4]


def test_text_progress_writes_plain_lines() -> None:
    stream = io.StringIO()
    report = TextProgress(stream)
    report(Job.from_json(_job("running", 1)))
    report(Job.from_json(_job("succeeded", 4)))
    assert stream.getvalue() == (
        "job_1: running 1/4 done, 0 failed\njob_1: succeeded 4/4 done, 0 failed\n"
    )


def test_job_request_builds_json_tensors_for_a_submission() -> None:
    transport = MockTransport()
    transport.add_route("POST", "/v1/jobs", _job("queued", 0))
    request = job_request({"x": np.array([[1.5, 2.0]], np.float32)}, outputs=["y"])
    with Client(URL, transport=transport) as client:
        client.jobs.submit("m", [request], version=2, priority=5)
    body = json.loads(transport.requests[0].content)
    assert body == {
        "model": "m", "version": "2", "priority": 5,
        "requests": [{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2],
                                  "data": [1.5, 2.0]}], "outputs": [{"name": "y"}]}],
    }  # fmt: skip
