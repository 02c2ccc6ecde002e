"""A gateway merges concurrent requests for one model version into one node call
(core/gateway/remote.py): each caller gets its own rows, its share of the call's compute and
what the node answered; the call carries the latest deadline and the tenant its callers
share; failures, retries and callers that give up behave as for a lone call. Against an
in-memory directory and node client (tests/api/test_gateway.py runs a real node)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.nodes import NodeAnswer, NodeInfo
from modelgate.core.gateway.remote import MergingRuntime, RemoteRuntime, remote_builder
from modelgate.core.gateway.tenant_metadata import TENANT_KEY
from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.core.serving.ports import ModelRuntime, Timing, VersionSource
from modelgate.core.serving.registry import LoadedVersion
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.testing import StaticDirectory

BATCH = 16


def _manifest(**extra: Any) -> ModelManifest:
    return parse_manifest(
        "m",
        {
            "runtime": "remote",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, -1]}],
            "batching": {"max_batch_size": BATCH, "max_queue_delay_us": 1000},
            **extra,
        },
    )


class Call:
    """One node call as the node saw it."""

    def __init__(self, node: str, rows: int, timeout_s: float, headers: Mapping[str, str]):
        self.node = node
        self.rows = rows
        self.deadline = time.monotonic() + timeout_s
        self.headers = dict(headers)


class Client:
    """Answers y = 2x, with the node's id in its parameters, once ``gate`` is open; the
    next calls fail with the kinds in ``failures``, one each, whichever node they reach."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls: list[Call] = []
        self.failures: list[ErrorKind] = []
        self.called = asyncio.Event()

    async def reached(self, count: int) -> None:
        """Until ``count`` calls have been made."""
        while len(self.calls) < count:
            self.called.clear()
            await self.called.wait()

    async def infer(
        self,
        node: NodeInfo,
        model: str,
        version: int,
        inputs: Mapping[str, Any],
        *,
        timeout_s: float,
        headers: Mapping[str, str],
    ) -> NodeAnswer:
        self.calls.append(Call(node.id, len(inputs["x"]), timeout_s, headers))
        self.called.set()
        failure = self.failures.pop(0) if self.failures else None
        await self.gate.wait()
        if failure is not None:
            raise ModelgateError(failure, f"{node.id} failed")
        return NodeAnswer({"y": np.asarray(inputs["x"]) * 2}, {"node": node.id})

    async def close(self) -> None:
        return None


async def _gateway(
    client: Client,
    manifest: ModelManifest | None = None,
    nodes: tuple[str, ...] = ("a",),
    **builder: Any,
) -> LoadedVersion:
    manifest = manifest or _manifest()
    infos = [NodeInfo(n, f"{n}:1", "cpu", models={"m": {1: manifest}}) for n in nodes]
    cluster = Cluster(
        StaticDirectory(infos), client, rng=random.Random(7), default_timeout_s=1000.0
    )
    await cluster.refresh()
    return remote_builder(cluster, merge_calls=1, **builder)(VersionSource(1, "", manifest))


def _x(rows: int, value: float, width: int = 2) -> np.ndarray[Any, Any]:
    return np.arange(rows * width, dtype=np.float32).reshape(rows, width) + value


async def _busy(loaded: LoadedVersion, client: Client) -> asyncio.Task[Any]:
    """A first request, held at the node: the requests that follow queue and merge."""
    client.gate.clear()
    made = len(client.calls)
    first = asyncio.ensure_future(loaded.runtime.infer({"x": _x(1, -1)}, Timing()))
    await client.reached(made + 1)
    return first


async def _release(client: Client, first: asyncio.Task[Any]) -> None:
    client.gate.set()
    await first


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(composition=st.lists(st.integers(1, 4), min_size=2, max_size=4))
def test_concurrent_requests_merge_into_one_call_and_each_gets_its_rows(
    composition: list[int],
) -> None:
    async def run() -> None:
        client = Client()
        loaded = await _gateway(client)
        first = await _busy(loaded, client)
        timings = [Timing() for _ in composition]
        inputs = [_x(rows, 100 * i) for i, rows in enumerate(composition)]
        calls = [loaded.runtime.infer({"x": x}, t) for x, t in zip(inputs, timings, strict=True)]
        answers = asyncio.gather(*calls)
        await asyncio.sleep(0)
        await _release(client, first)
        for x, answer in zip(inputs, await answers, strict=True):
            assert answer["y"].tolist() == (x * 2).tolist()
        assert [c.rows for c in client.calls] == [1, sum(composition)]
        compute = timings[0].compute_ns
        assert compute > 0 and all(t.compute_ns == compute for t in timings)
        assert sum(t.charged_ns for t in timings) == compute  # shares, not the whole each
        for rows, t in zip(composition[1:], timings[1:], strict=True):
            assert t.charged_ns == compute * rows // sum(composition)
        for t in timings:  # what the node answered reaches every caller
            assert (t.node, t.hardware, t.parameters) == ("a", "cpu", {"node": "a"})
            assert t.batch_size == sum(composition)
        assert loaded.batched and isinstance(loaded.runtime, MergingRuntime)

    asyncio.run(run())


async def test_the_merged_call_has_the_latest_deadline_and_none_if_a_caller_has_none() -> None:
    client = Client()
    loaded = await _gateway(client)
    now = time.monotonic()
    for deadlines, expected in (
        ([now + 50, now + 200, now + 100], now + 200),
        ([now + 50, None], now + 1000),  # no deadline: the cluster's default timeout
    ):
        first = await _busy(loaded, client)
        calls = asyncio.gather(
            *(loaded.runtime.infer({"x": _x(1, 0)}, Timing(deadline=d)) for d in deadlines)
        )
        await asyncio.sleep(0)
        await _release(client, first)
        await calls
        assert client.calls[-1].rows == len(deadlines)
        assert client.calls[-1].deadline == pytest.approx(expected, abs=5)


async def test_the_merged_call_names_the_tenant_its_callers_share_else_none() -> None:
    client = Client()
    loaded = await _gateway(client)
    for tenants, expected in ((["t1", "t1"], "t1"), (["t1", "t2"], None), (["t1", None], None)):
        first = await _busy(loaded, client)
        calls = asyncio.gather(
            *(loaded.runtime.infer({"x": _x(1, 0)}, Timing(tenant=t, weight=3.0)) for t in tenants)
        )
        await asyncio.sleep(0)
        await _release(client, first)
        await calls
        assert client.calls[-1].rows == len(tenants)
        assert client.calls[-1].headers.get(TENANT_KEY) == expected


async def test_a_lone_request_is_forwarded_with_its_own_deadline_and_tenant() -> None:
    """Requests one at a time skip the queue (the batcher's direct path): they still carry
    their deadline and tenant, and get the node's answer fields."""
    client = Client()
    loaded = await _gateway(client)
    for _ in range(12):
        deadline = time.monotonic() + 300
        timing = Timing(deadline=deadline, tenant="solo")
        await loaded.runtime.infer({"x": _x(1, 0)}, timing)
        assert client.calls[-1].headers.get(TENANT_KEY) == "solo"
        assert client.calls[-1].deadline == pytest.approx(deadline, abs=5)
        assert (timing.node, timing.parameters) == ("a", {"node": "a"})
    assert all(c.rows == 1 for c in client.calls)


async def test_a_caller_stops_waiting_at_its_own_deadline_while_the_call_goes_on() -> None:
    """Merged with a caller of no deadline, the call has none; a stalled node still answers
    the caller with a deadline DEADLINE_EXCEEDED at its own, and the other its answer."""
    client = Client()
    loaded = await _gateway(client)
    first = await _busy(loaded, client)
    hurried = asyncio.ensure_future(
        loaded.runtime.infer({"x": _x(1, 0)}, Timing(deadline=time.monotonic() + 0.2))
    )
    patient = asyncio.ensure_future(loaded.runtime.infer({"x": _x(1, 5)}, Timing()))
    await asyncio.sleep(0)
    client.gate.set()
    client.gate.clear()  # the held call goes on; the merged one stalls at the node
    await first
    await client.reached(2)
    assert client.calls[-1].rows == 2
    with pytest.raises(ModelgateError) as caught:
        await hurried
    assert caught.value.kind is ErrorKind.DEADLINE_EXCEEDED
    assert not patient.done()
    client.gate.set()
    assert (await patient)["y"].tolist() == (_x(1, 5) * 2).tolist()


async def test_a_node_error_reaches_every_caller_of_the_merged_call() -> None:
    client = Client()
    loaded = await _gateway(client)
    first = await _busy(loaded, client)
    calls = asyncio.gather(
        *(loaded.runtime.infer({"x": _x(1, 0)}, Timing()) for _ in range(3)),
        return_exceptions=True,
    )
    await asyncio.sleep(0)
    client.failures = [ErrorKind.INVALID_ARGUMENT]  # the merged call's
    await _release(client, first)
    errors = await calls
    assert len(client.calls) == 2  # a caller's error: answered at once, not retried
    assert [e.kind if isinstance(e, ModelgateError) else e for e in errors] == [
        ErrorKind.INVALID_ARGUMENT
    ] * 3


async def test_a_node_fault_of_a_merged_call_is_retried_on_another_node() -> None:
    client = Client()
    loaded = await _gateway(client, nodes=("a", "b"))
    first = await _busy(loaded, client)
    timings = [Timing() for _ in range(3)]
    calls = asyncio.gather(
        *(loaded.runtime.infer({"x": _x(1, i)}, t) for i, t in enumerate(timings))
    )
    await asyncio.sleep(0)
    client.failures = [ErrorKind.UNAVAILABLE]  # the merged call's first try
    await _release(client, first)
    answers = await calls
    assert [a["y"].tolist() for a in answers] == [(_x(1, i) * 2).tolist() for i in range(3)]
    failed, answered = client.calls[-2:]
    assert failed.rows == answered.rows == 3 and failed.node != answered.node
    assert {t.node for t in timings} == {answered.node}


async def test_a_caller_that_gives_up_leaves_the_others_their_answers() -> None:
    client = Client()
    loaded = await _gateway(client)
    first = await _busy(loaded, client)
    leaving = asyncio.ensure_future(loaded.runtime.infer({"x": _x(2, 0)}, Timing()))
    staying = asyncio.ensure_future(loaded.runtime.infer({"x": _x(1, 7)}, Timing()))
    await asyncio.sleep(0)
    client.gate.set()
    client.gate.clear()  # the held call goes on; the merged one waits at the node
    await first
    await client.reached(2)
    leaving.cancel()
    client.gate.set()
    assert (await staying)["y"].tolist() == (_x(1, 7) * 2).tolist()
    assert leaving.cancelled()
    assert client.calls[-1].rows == 3


async def test_requests_of_other_shapes_are_not_merged_and_get_their_own_answers() -> None:
    client = Client()
    loaded = await _gateway(client)
    first = await _busy(loaded, client)
    narrow, wide = _x(1, 0, width=2), _x(1, 0, width=3)
    calls = asyncio.gather(
        loaded.runtime.infer({"x": narrow}, Timing()), loaded.runtime.infer({"x": wide}, Timing())
    )
    await asyncio.sleep(0)
    await _release(client, first)
    a, b = await calls
    assert a["y"].tolist() == (narrow * 2).tolist() and b["y"].tolist() == (wide * 2).tolist()
    assert [c.rows for c in client.calls] == [1, 1, 1]


@pytest.mark.parametrize(
    ("manifest", "builder"),
    [
        (_manifest(batching=None), {}),
        (_manifest(anomaly={"action": "flag", "threshold": 0.5}), {}),
        (_manifest(), {"merge": False}),
    ],
    ids=["no batching", "anomaly check", "merging off"],
)
async def test_versions_that_cannot_merge_forward_each_request_alone(
    manifest: ModelManifest, builder: dict[str, Any]
) -> None:
    client = Client()
    loaded = await _gateway(client, manifest, **builder)
    runtime: ModelRuntime = loaded.runtime
    assert isinstance(runtime, RemoteRuntime) and not loaded.batched
    client.gate.clear()
    calls = asyncio.gather(*(runtime.infer({"x": _x(1, i)}, Timing()) for i in range(4)))
    await client.reached(4)
    client.gate.set()
    answers = await calls
    assert [a["y"].tolist() for a in answers] == [(_x(1, i) * 2).tolist() for i in range(4)]
    assert [c.rows for c in client.calls] == [1, 1, 1, 1]
