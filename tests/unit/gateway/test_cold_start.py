"""The cold-start wait: a request for a model no node announces waits for one, bounded in
time and in number, and is woken by the refresh that shows the node (in-memory directory
and node client; the real processes are in tests/e2e/test_cold_start.py)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.cold_start import ColdStartWait
from modelgate.core.serving.manifest import ModelManifest
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.testing import StaticDirectory
from tests.unit.gateway.test_cluster import INPUTS, MANIFEST, Client, _node


async def _scaled_to_zero(wait_s: float, max_waiting: int = 10) -> tuple[Cluster, StaticDirectory]:
    directory = StaticDirectory([_node("a")])
    cluster = Cluster(
        directory,
        Client(),
        rng=random.Random(1),
        cold_start=ColdStartWait(wait_s, max_waiting=max_waiting),
    )
    await cluster.refresh()
    directory.found = []  # the pool scaled to zero
    await cluster.refresh()
    return cluster, directory


async def test_a_waiting_request_is_answered_by_the_node_that_comes() -> None:
    cluster, directory = await _scaled_to_zero(60)
    request = asyncio.create_task(cluster.forward("m", 1, INPUTS, None))
    await asyncio.sleep(0.05)
    assert not request.done() and cluster.cold_start is not None
    assert cluster.cold_start.waiting == 1
    directory.found = [_node("b")]
    await cluster.refresh()  # the node announced itself: the waiter is woken at once
    outputs = await asyncio.wait_for(request, 5)
    assert outputs["y"].tolist() == [[2.0, 2.0]]
    assert cluster.cold_start.waiting == 0


async def test_without_a_node_the_wait_ends_in_503_with_retry_after() -> None:
    cluster, _ = await _scaled_to_zero(0.2)
    started = time.monotonic()
    with pytest.raises(ModelgateError) as caught:
        await cluster.forward("m", 1, INPUTS, None)
    assert caught.value.kind is ErrorKind.UNAVAILABLE and caught.value.retry_after
    assert time.monotonic() - started >= 0.19


async def test_a_refresh_without_the_model_keeps_the_request_waiting() -> None:
    cluster, directory = await _scaled_to_zero(60)
    request = asyncio.create_task(cluster.forward("m", 1, INPUTS, None))
    await asyncio.sleep(0.05)
    directory.found = [_node("a", draining=True)]  # a node, but leaving: not a start
    await cluster.refresh()
    await asyncio.sleep(0.05)
    assert not request.done()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert cluster.cold_start is not None and cluster.cold_start.waiting == 0


async def test_waiting_requests_are_bounded_in_number() -> None:
    cluster, directory = await _scaled_to_zero(60, max_waiting=2)
    waiting = [asyncio.create_task(cluster.forward("m", 1, INPUTS, None)) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(ModelgateError) as caught:  # the third: answered at once
        await asyncio.wait_for(cluster.forward("m", 1, INPUTS, None), 1)
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    directory.found = [_node("a")]
    await cluster.refresh()
    for request in waiting:
        assert (await asyncio.wait_for(request, 5))["y"].shape == (1, 2)


async def test_the_callers_deadline_bounds_the_wait() -> None:
    cluster, _ = await _scaled_to_zero(60)
    assert cluster.cold_start is not None
    started = time.monotonic()
    assert not await cluster.cold_start.wait(lambda: False, time.monotonic() + 0.1)
    assert time.monotonic() - started < 30


async def test_a_node_with_open_breakers_is_not_waited_for() -> None:
    # announced but failing: answered at once, as before the wait existed
    directory = StaticDirectory([_node("a")])
    cluster = Cluster(
        directory,
        Client({"a": [ErrorKind.UNAVAILABLE] * 100}),
        rng=random.Random(1),
        cold_start=ColdStartWait(60),
    )
    await cluster.refresh()
    for _ in range(6):
        with pytest.raises(ModelgateError):
            await asyncio.wait_for(cluster.forward("m", 1, INPUTS, None), 5)
    assert cluster.cold_start is not None and cluster.cold_start.waiting == 0


class _Served:
    """A catalogue of models served recently, in memory (``error``: it fails)."""

    def __init__(self, served: dict[str, dict[int, ModelManifest]]) -> None:
        self.found = served
        self.error: Exception | None = None

    async def served(self) -> dict[str, dict[int, ModelManifest]]:
        if self.error is not None:
            raise self.error
        return self.found


async def test_a_model_of_the_catalogue_waits_though_no_node_announced_it() -> None:
    """A fresh gateway (no node ever seen) knows the catalogue's models; a live node's
    manifests win over the catalogue's; a failing catalogue keeps its last answer."""
    other = MANIFEST.model_copy(update={"name": "z", "description": "from the catalogue"})
    served = _Served({"z": {3: other}, "m": {9: MANIFEST}})
    directory = StaticDirectory([])
    cluster = Cluster(
        directory, Client(), cold_start=ColdStartWait(0.05, max_waiting=10), served=served
    )
    assert await cluster.refresh() == {"z", "m"}
    assert cluster.catalog == {"z": {3: other}, "m": {9: MANIFEST}}
    with pytest.raises(ModelgateError) as caught:
        await cluster.forward("z", 3, INPUTS, None)
    assert caught.value.kind is ErrorKind.UNAVAILABLE and caught.value.retry_after
    directory.found = [_node("a")]  # a node announces m: its versions, not the record's
    await cluster.refresh()
    assert cluster.catalog == {"z": {3: other}, "m": {1: MANIFEST}}
    served.error = ConnectionError("down")
    directory.found = []
    await cluster.refresh()
    assert cluster.catalog == {"z": {3: other}, "m": {9: MANIFEST}}
