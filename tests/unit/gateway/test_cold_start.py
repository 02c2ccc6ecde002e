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
from tests.unit.gateway.test_cluster import INPUTS, MANIFEST, Client, Clock, _node


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
    """A catalogue of models served recently, in memory (``error``: it fails), counting
    its reads."""

    def __init__(self, served: dict[str, dict[int, ModelManifest]]) -> None:
        self.found = served
        self.error: Exception | None = None
        self.reads = 0

    async def served(self) -> dict[str, dict[int, ModelManifest]]:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.found


async def test_a_model_of_the_catalogue_waits_though_no_node_announced_it() -> None:
    """A fresh gateway (no node ever seen) knows the catalogue's models; a live node's
    manifest wins for the versions it announces, and the catalogue's other versions of
    its model stay known (another pool, at zero, serves them)."""
    other = MANIFEST.model_copy(update={"name": "z", "description": "from the catalogue"})
    old = MANIFEST.model_copy(update={"labels": {"announced": "a while ago"}})
    served = _Served({"z": {3: other}, "m": {1: old, 9: MANIFEST}})
    directory = StaticDirectory([])
    cluster = Cluster(
        directory, Client(), cold_start=ColdStartWait(0.05, max_waiting=10), served=served
    )
    assert await cluster.refresh() == {"z", "m"}
    assert cluster.catalog == {"z": {3: other}, "m": {1: old, 9: MANIFEST}}
    with pytest.raises(ModelgateError) as caught:
        await cluster.forward("z", 3, INPUTS, None)
    assert caught.value.kind is ErrorKind.UNAVAILABLE and caught.value.retry_after
    directory.found = [_node("a")]  # a node announces m v1: its manifest, v9 still known
    assert await cluster.refresh() == {"m"}
    assert cluster.catalog["m"] == {1: MANIFEST, 9: MANIFEST}
    assert cluster.catalog["m"][1].labels == {}
    assert (await cluster.forward("m", 1, INPUTS, None))["y"].shape == (1, 2)
    with pytest.raises(ModelgateError) as caught:  # v9's pool is at zero: wait, then 503
        await cluster.forward("m", 9, INPUTS, None)
    assert caught.value.kind is ErrorKind.UNAVAILABLE and caught.value.retry_after


async def test_the_catalogue_is_read_at_start_then_every_served_read_s() -> None:
    """One read at the first refresh, then one every ``served_read_s`` (the node table
    every refresh); a failed read keeps the last catalogue, and the next refresh asks
    again."""
    clock = Clock()
    served = _Served({"z": {3: MANIFEST}})
    cluster = Cluster(StaticDirectory([]), Client(), clock=clock, served=served, served_read_s=30)
    await cluster.refresh()
    assert served.reads == 1 and set(cluster.catalog) == {"z"}
    served.found = {"y": {1: MANIFEST}}
    for _ in range(29):  # a refresh a second: the catalogue is not read again
        clock.now += 1
        await cluster.refresh()
    assert served.reads == 1 and set(cluster.catalog) == {"z"}
    clock.now += 1
    await cluster.refresh()
    assert served.reads == 2 and set(cluster.catalog) == {"y"}
    served.error = ConnectionError("down")
    clock.now += 30
    await cluster.refresh()
    clock.now += 1
    await cluster.refresh()
    assert served.reads == 4 and set(cluster.catalog) == {"y"}
    served.error = None
    clock.now += 1
    await cluster.refresh()
    clock.now += 1
    await cluster.refresh()
    assert served.reads == 5


async def test_a_model_announced_between_reads_stays_known_when_its_node_leaves() -> None:
    """A model a node announced after the last read, whose node left before the next one,
    waits for a node (its announcement wrote it to the catalogue), not 404."""
    clock = Clock()
    served = _Served({})
    directory = StaticDirectory([])
    cluster = Cluster(directory, Client(), clock=clock, served=served, served_read_s=30)
    await cluster.refresh()
    clock.now += 5
    directory.found = [_node("a")]
    await cluster.refresh()
    clock.now += 5
    directory.found = []  # its pool scaled to zero before the next read
    await cluster.refresh()
    assert served.reads == 1 and cluster.catalog == {"m": {1: MANIFEST}}
    served.found = {"m": {1: MANIFEST, 2: MANIFEST}}  # the next read replaces it all
    clock.now += 30
    await cluster.refresh()
    assert cluster.catalog == {"m": {1: MANIFEST, 2: MANIFEST}}
