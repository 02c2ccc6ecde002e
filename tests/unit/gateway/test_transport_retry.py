"""A call that died with its node is retried like a refused connection; the caller's own
cancellation and deadline are not; the caller's error names no node; the retry budget
absorbs a node's whole share of calls failing at once (issue 17, finding 6).

The gRPC statuses are the ones grpc really reports (``grpc.aio.AioRpcError`` as the
gateway's channel raises it), seen when a node was killed under load."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.cluster.client import GrpcNodeClient, _error, classify_status, refused_stream
from modelgate.core.gateway.breaker import BreakerPolicy
from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.nodes import NodeAnswer, NodeInfo
from modelgate.core.gateway.retry import RetryBudget
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.ports import Timing
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.testing import StaticDirectory

MANIFEST = parse_manifest(
    "m",
    {
        "runtime": "remote",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    },
)
INPUTS = {"x": np.ones((1, 2), dtype=np.float32)}
S = grpc.StatusCode

#: (code, details) of calls that died with their node, as grpc 1.6x-1.8x reports them
TRANSPORT_FAILURES = [
    (S.UNAVAILABLE, "Stream removed"),
    (S.UNAVAILABLE, "Socket closed"),
    (S.UNAVAILABLE, "Stream removed (recvmsg:Connection reset by peer (104))"),
    (S.UNAVAILABLE, "Stream removed (Socket closed)"),
    (S.UNAVAILABLE, "Stream removed (RST_STREAM (Received RST_STREAM with error code 7))"),
    (S.UNAVAILABLE, "recvmsg:Connection reset by peer"),
    (S.UNAVAILABLE, "Connection reset by peer"),
    (S.UNAVAILABLE, "Broken pipe"),
    (S.UNAVAILABLE, "GOAWAY received"),
    (S.UNAVAILABLE, "keepalive watchdog timeout"),
    (
        S.UNAVAILABLE,
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.7:8001: "
        "Failed to connect to remote host: Connection refused",
    ),
    (S.INTERNAL, "Received RST_STREAM with error code 2"),
    (S.INTERNAL, "RST_STREAM"),
    (S.UNKNOWN, "Stream removed"),
    (S.UNKNOWN, "Socket closed"),
    (S.CANCELLED, "Cancelled"),
    (S.CANCELLED, "Channel closed!"),
    (S.CANCELLED, None),
]

NODE = NodeInfo("node-7", "10.0.0.7:8001", models={"m": {1: MANIFEST}})


def _rpc_error(
    code: grpc.StatusCode, details: str | None, trailing: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )


@pytest.mark.parametrize(("code", "details"), TRANSPORT_FAILURES)
def test_every_transport_failure_is_unavailable_and_marked(
    code: grpc.StatusCode, details: str | None
) -> None:
    assert classify_status(code, details) == (ErrorKind.UNAVAILABLE, True)
    error = _error(NODE, _rpc_error(code, details), timed_out=False)
    assert error.kind is ErrorKind.UNAVAILABLE
    assert error.details["transport"] is True


@given(
    word=st.sampled_from(["Stream removed", "SOCKET CLOSED", "connection reset", "rst_stream"]),
    before=st.text(max_size=20),
    after=st.text(max_size=20),
    code=st.sampled_from([S.INTERNAL, S.UNKNOWN]),
)
def test_a_transport_word_anywhere_makes_internal_or_unknown_retryable(
    word: str, before: str, after: str, code: grpc.StatusCode
) -> None:
    assert classify_status(code, before + word + after) == (ErrorKind.UNAVAILABLE, True)


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (S.INTERNAL, "the model raised ValueError", ErrorKind.INTERNAL),
        (S.UNKNOWN, "Exception calling application", ErrorKind.INTERNAL),
        (S.INVALID_ARGUMENT, "input 'x' has shape [1, 3]", ErrorKind.INVALID_ARGUMENT),
        (S.NOT_FOUND, "unknown model 'm'", ErrorKind.NOT_FOUND),
        (S.DEADLINE_EXCEEDED, "Deadline Exceeded", ErrorKind.DEADLINE_EXCEEDED),
        (S.RESOURCE_EXHAUSTED, "queue full", ErrorKind.OVERLOADED),
    ],
)
def test_a_nodes_own_answer_keeps_its_kind(
    code: grpc.StatusCode, details: str, kind: ErrorKind
) -> None:
    assert classify_status(code, details) == (kind, False)


def test_a_refused_stream_is_marked_refused_and_nothing_else_is() -> None:
    refused = "Stream removed (RST_STREAM (Received RST_STREAM with error code 7))"
    assert refused_stream(S.UNAVAILABLE, refused)
    assert _error(NODE, _rpc_error(S.UNAVAILABLE, refused), False).details["refused"] is True
    for code, details in TRANSPORT_FAILURES:
        if details != refused:
            assert not refused_stream(code, details)
            assert "refused" not in _error(NODE, _rpc_error(code, details), False).details
    # a full queue says so with Retry-After: overloaded, not a transport failure
    busy = _error(NODE, _rpc_error(S.UNAVAILABLE, "queue full", (("retry-after", "2"),)), False)
    assert busy.kind is ErrorKind.OVERLOADED and busy.retry_after == 2.0
    assert "transport" not in busy.details


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class DyingClient:
    """Node ``dead`` fails every call with the error the real client makes of ``status``;
    a node in ``stalled`` never answers; the others answer."""

    def __init__(
        self,
        status: tuple[grpc.StatusCode, str | None] = (S.UNAVAILABLE, "Stream removed"),
        dead: frozenset[str] = frozenset({"a"}),
        stalled: frozenset[str] = frozenset(),
        clock: FakeClock | None = None,
    ):
        self.clock = clock  # a stalled call moves it on by its timeout instead of waiting
        self.status = status
        self.dead = dead
        self.stalled = stalled
        self.calls: list[str] = []

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
        self.calls.append(node.id)
        if node.id in self.stalled:
            if self.clock is None:
                await asyncio.sleep(timeout_s)
            else:
                self.clock.now += timeout_s
            raise ModelgateError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"node {node.id} did not answer in time",
                details={"timed_out": True},
            )
        if node.id in self.dead:
            raise _error(node, _rpc_error(*self.status), timed_out=False)
        return NodeAnswer({"y": np.asarray(inputs["x"]) * 2})

    async def close(self) -> None:
        return None


def _node(node_id: str) -> NodeInfo:
    return NodeInfo(node_id, f"10.0.0.{ord(node_id[0])}:8001", models={"m": {1: MANIFEST}})


async def _cluster(client: DyingClient, nodes: str = "ab", **kwargs: Any) -> Cluster:
    cluster = Cluster(
        StaticDirectory([_node(n) for n in nodes]), client, rng=random.Random(3), **kwargs
    )
    await cluster.refresh()
    return cluster


@pytest.mark.parametrize(("code", "details"), TRANSPORT_FAILURES)
async def test_a_call_that_died_with_its_node_is_answered_by_another(
    code: grpc.StatusCode, details: str | None
) -> None:
    client = DyingClient((code, details))
    cluster = await _cluster(client)
    for _ in range(20):
        outputs = await cluster.forward("m", 1, INPUTS, Timing())
        assert outputs["y"].tolist() == [[2.0, 2.0]]
    assert "a" in client.calls  # the dead node was tried, and its calls went to b


async def test_a_whole_nodes_share_failing_at_once_is_retried_within_the_budget() -> None:
    """About half of a gateway's calls fail together when a node dies: after a second of
    traffic at 100 requests/s (20% of it: 20 retries, plus 100 a window), 64 calls
    failing at once are all retried."""
    now = [0.0]
    budget = RetryBudget(0.2, clock=lambda: now[0])
    for _ in range(100):
        now[0] += 0.01
        budget.request()
    assert all(budget.try_retry() for _ in range(64))
    client = DyingClient()
    cluster = await _cluster(client, budget=budget, breaker=BreakerPolicy(10_000, 5.0))

    async def first_on_a() -> None:
        await cluster.forward("m", 1, INPUTS, Timing())

    await asyncio.gather(*(first_on_a() for _ in range(64)))


@settings(max_examples=100, deadline=None)
@given(
    ratio=st.floats(0, 1),
    min_retries=st.integers(0, 50),
    events=st.lists(st.tuples(st.booleans(), st.floats(0, 3)), max_size=300),
)
def test_retries_in_any_window_stay_within_the_budget(
    ratio: float, min_retries: int, events: list[tuple[bool, float]]
) -> None:
    """At each retry allowed at ``t``: the retries of the last 9 s are at most ``ratio``
    of the requests of the last 10 s plus ``min_retries`` (the window is counted in
    one-second slots, so it reaches between 9 and 10 s back)."""
    now = [1000.0]
    budget = RetryBudget(ratio, window_s=10.0, min_retries=min_retries, clock=lambda: now[0])
    requests: list[float] = []
    retries: list[float] = []
    for is_request, pause in events:
        now[0] += pause
        t = now[0]
        if is_request:
            budget.request()
            requests.append(t)
        elif budget.try_retry():
            retries.append(t)
            recent = sum(1 for r in retries if r > t - 9.0)
            allowed = ratio * sum(1 for r in requests if r >= t - 10.0) + min_retries
            assert recent <= allowed + 1e-9
    assert (budget.requests, budget.retries) == (len(requests), len(retries))


def test_an_idle_window_refills_the_budget() -> None:
    now = [0.0]
    budget = RetryBudget(0.0, window_s=10.0, min_retries=3, clock=lambda: now[0])
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]
    now[0] += 5.0
    assert not budget.try_retry()  # the spent retries are still in the window
    now[0] += 6.0
    assert budget.try_retry()


async def test_the_callers_cancellation_is_not_retried() -> None:
    client = DyingClient(dead=frozenset(), stalled=frozenset({"a", "b"}))
    cluster = await _cluster(client, default_timeout_s=60.0)
    task = asyncio.ensure_future(cluster.forward("m", 1, INPUTS, Timing()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(client.calls) == 1  # the caller left: nothing was sent again
    assert all(node["outstanding"] == 0 for node in cluster.nodes())
    assert all(node["breaker"] == "closed" for node in cluster.nodes())


async def test_nothing_is_retried_once_the_callers_deadline_has_passed() -> None:
    clock = FakeClock()
    client = DyingClient(dead=frozenset(), stalled=frozenset({"a", "b"}), clock=clock)
    cluster = await _cluster(client, max_attempts=5, clock=clock)
    with pytest.raises(ModelgateError) as caught:
        await cluster.forward("m", 1, INPUTS, Timing(deadline=clock.now + 0.2))
    assert caught.value.kind is ErrorKind.DEADLINE_EXCEEDED
    # a per-try timeout left time for the other node; after it, the deadline was spent
    assert sorted(client.calls) == ["a", "b"]


@pytest.mark.parametrize(
    "status",
    [
        (S.UNAVAILABLE, "Stream removed (recvmsg:Connection reset by peer (104))"),
        (S.INTERNAL, "the model raised"),
        (S.UNAUTHENTICATED, "bad node key"),
        (S.RESOURCE_EXHAUSTED, "queue full"),
        (S.NOT_FOUND, "unknown model"),
    ],
)
async def test_the_callers_error_names_no_node(status: tuple[grpc.StatusCode, str]) -> None:
    client = DyingClient(status, dead=frozenset({"a", "b"}))
    cluster = await _cluster(client)
    with pytest.raises(ModelgateError) as caught:
        await cluster.forward("m", 1, INPUTS, Timing())
    message = caught.value.message
    for node in cluster.nodes():
        assert node["address"] not in message
        assert node["address"].split(":")[0] not in message
    assert not re.search(r"\bnode [ab]\b", message)
    assert client.calls  # and the nodes were tried


async def test_with_every_node_stalled_the_callers_timeout_names_no_node() -> None:
    clock = FakeClock()
    client = DyingClient(dead=frozenset(), stalled=frozenset({"a", "b"}), clock=clock)
    cluster = await _cluster(client, clock=clock)
    with pytest.raises(ModelgateError) as caught:
        await cluster.forward("m", 1, INPUTS, Timing(deadline=clock.now + 0.1))
    assert caught.value.kind is ErrorKind.DEADLINE_EXCEEDED
    assert not re.search(r"\bnode [ab]\b", caught.value.message)


async def test_refused_streams_are_retried_and_open_no_breaker() -> None:
    refused = (S.UNAVAILABLE, "Stream removed (RST_STREAM (Received RST_STREAM with error code 7))")
    client = DyingClient(refused, dead=frozenset({"a"}))
    cluster = await _cluster(client, breaker=BreakerPolicy(2, 60.0))
    for _ in range(30):
        await cluster.forward("m", 1, INPUTS, Timing())
    assert client.calls.count("a") >= 3  # refused again and again
    assert [node["breaker"] for node in cluster.nodes()] == ["closed", "closed"]
    # the same node failing with a broken connection opens its breaker
    client.status = (S.UNAVAILABLE, "Socket closed")
    for _ in range(30):
        await cluster.forward("m", 1, INPUTS, Timing())
    assert [node["breaker"] for node in cluster.nodes()] == ["open", "closed"]


async def test_a_node_gets_another_connection_when_its_connections_are_full() -> None:
    client = GrpcNodeClient(max_streams_per_connection=2, max_connections_per_node=3)
    try:
        first = client._connection("127.0.0.1:1")
        assert client._connection("127.0.0.1:1") is first
        first.calls = 2
        second = client._connection("127.0.0.1:1")
        assert second is not first
        second.calls = 2
        third = client._connection("127.0.0.1:1")
        third.calls = 3
        second.calls = 1  # room again on the second: it is used before a fourth is opened
        assert client._connection("127.0.0.1:1") is second
        second.calls = 5
        # all three full, and no more allowed: the least busy
        assert client._connection("127.0.0.1:1") is first
        assert client._connection("127.0.0.1:2") not in (first, second, third)
    finally:
        await client.close()
