"""Regions and capacity classes in the gateway's choice of node: the own region first,
failover to another region when the own has no healthy node (and back), logged and counted
once per transition; job items on spot nodes, interactive requests on on-demand nodes until
they are saturated. In-memory directory and node client, a clock the test drives."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.cluster.directory import split_region
from modelgate.cluster.regions import RegionalNodeDirectory
from modelgate.core.gateway.breaker import BreakerPolicy
from modelgate.core.gateway.capacity import CapacityPolicy
from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.nodes import NodeInfo, parse_node
from modelgate.core.gateway.regions import RegionPolicy, valid_region
from modelgate.core.serving.ports import Timing
from modelgate.errors import ErrorKind
from modelgate.testing import StaticDirectory
from tests.unit.gateway.test_cluster import INPUTS, MANIFEST, Client, Clock


class Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failovers: list[tuple[str, str, str, str]] = []

    def forwarded(self, region: str, outcome: str) -> None:
        self.calls.append((region, outcome))

    def failover(self, model: str, version: str, origin: str, target: str) -> None:
        self.failovers.append((model, version, origin, target))


def _node(node_id: str, region: str = "", capacity: str = "on-demand") -> NodeInfo:
    return NodeInfo(
        node_id, f"{node_id}:1", models={"m": {1: MANIFEST}}, region=region, capacity=capacity
    )


async def _cluster(nodes: list[NodeInfo], client: Client, **kwargs: Any) -> Cluster:
    cluster = Cluster(StaticDirectory(nodes), client, rng=random.Random(7), **kwargs)
    await cluster.refresh()
    return cluster


async def _regions_served(cluster: Cluster, count: int, **kwargs: Any) -> list[str]:
    served = []
    for _ in range(count):
        timing = Timing(**kwargs)
        await cluster.forward("m", 1, INPUTS, timing)
        assert timing.parameters is not None
        served.append(timing.parameters["region"])
    return served


async def test_a_gateway_prefers_its_own_region_fails_over_and_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    observer = Observer()
    client = Client()
    nodes = [_node("a1", "eu"), _node("a2", "eu"), _node("b1", "us"), _node("c1", "ap")]
    cluster = await _cluster(
        nodes,
        client,
        clock=clock,
        breaker=BreakerPolicy(2, 5.0),
        regions=RegionPolicy("eu", ["us"], observer=observer),
    )
    assert set(await _regions_served(cluster, 20)) == {"eu"}
    # region eu dies: each call there fails (and is retried at once in another region)
    client.scripts = {"a1": [ErrorKind.UNAVAILABLE] * 1000, "a2": [ErrorKind.UNAVAILABLE] * 1000}
    caplog.set_level(logging.INFO, logger="modelgate.cluster")
    served = await _regions_served(cluster, 40)
    assert set(served) == {"us"}  # the failover order: us before ap; and no failed request
    assert [(n["id"], n["breaker"]) for n in cluster.nodes()][:2] == [
        ("a1", "open"),
        ("a2", "open"),
    ]
    # its breakers' probes fail while it is down: no transition, no extra log line
    for _ in range(3):
        clock.now += 5.0
        assert set(await _regions_served(cluster, 10)) == {"us"}
    # eu recovers: the next probes succeed, and traffic comes home
    client.scripts = {}
    clock.now += 5.0
    served = await _regions_served(cluster, 20)
    assert served[-10:] == ["eu"] * 10
    assert observer.failovers == [("m", "1", "eu", "us"), ("m", "1", "us", "eu")]
    lines = [r.getMessage() for r in caplog.records if "region" in r.getMessage()]
    assert lines == [
        "model m v1: no healthy node in region eu; failing over to region us",
        "model m v1: region eu has a healthy node again; back from region us",
    ]
    outcomes = {outcome for region, outcome in observer.calls if region == "eu"}
    assert outcomes == {"ok", "unavailable"}


async def test_regions_not_in_the_failover_list_come_last_and_a_node_without_one_is_home() -> None:
    client = Client({"a1": [ErrorKind.UNAVAILABLE] * 1000, "b1": [ErrorKind.UNAVAILABLE] * 1000})
    cluster = await _cluster(
        [_node("a1", "eu"), _node("b1", "us"), _node("c1", "ap"), _node("x")],
        client,
        breaker=BreakerPolicy(1, 60.0),
        regions=RegionPolicy("eu", ["us"]),
    )
    # x announces no region: it is taken to be in eu, so eu still has a healthy node
    served = []
    for _ in range(20):
        timing = Timing()
        await cluster.forward("m", 1, INPUTS, timing)
        served.append(timing.node)
    assert served[-10:] == ["x"] * 10
    assert "c1" not in client.calls


async def test_without_regions_nothing_is_marked_and_every_node_is_alike() -> None:
    client = Client()
    cluster = await _cluster([_node("a"), _node("b")], client)
    assert cluster.regions is None
    for _ in range(20):
        timing = Timing()
        await cluster.forward("m", 1, INPUTS, timing)
        assert timing.parameters == {"node": timing.node}
    assert set(client.calls) == {"a", "b"}


async def test_job_items_prefer_spot_and_interactive_requests_on_demand_until_saturated() -> None:
    client = Client()
    nodes = [_node("od"), _node("spot1", capacity="spot"), _node("spot2", capacity="spot")]
    cluster = await _cluster(nodes, client, capacity=CapacityPolicy(saturation=2))
    for _ in range(10):
        timing = Timing(critical=False)
        await cluster.forward("m", 1, INPUTS, timing)
        assert timing.node in ("spot1", "spot2")
    for _ in range(10):
        timing = Timing()
        await cluster.forward("m", 1, INPUTS, timing)
        assert timing.node == "od"
    # the on-demand node holds 2 calls: saturated, an interactive request spills to spot
    cluster._nodes["od"].outstanding = 2
    timing = Timing()
    await cluster.forward("m", 1, INPUTS, timing)
    assert timing.node in ("spot1", "spot2")
    cluster._nodes["od"].outstanding = 1
    timing = Timing()
    await cluster.forward("m", 1, INPUTS, timing)
    assert timing.node == "od"


async def test_saturation_zero_uses_spot_for_interactive_requests_only_without_on_demand() -> None:
    client = Client({"od": [ErrorKind.UNAVAILABLE] * 1000})
    nodes = [_node("od"), _node("spot", capacity="spot")]
    cluster = await _cluster(
        nodes, client, capacity=CapacityPolicy(saturation=0), breaker=BreakerPolicy(1, 60.0)
    )
    cluster._nodes["od"].outstanding = 10_000
    timing = Timing()
    await cluster.forward("m", 1, INPUTS, timing)  # od fails once: breaker open, spot answers
    assert timing.node == "spot"
    timing = Timing()
    await cluster.forward("m", 1, INPUTS, timing)
    assert timing.node == "spot" and client.calls.count("od") == 1
    # a job item with only on-demand nodes left is served by them
    only = await _cluster([_node("od")], Client(), capacity=CapacityPolicy(0))
    timing = Timing(critical=False)
    await only.forward("m", 1, INPUTS, timing)
    assert timing.node == "od"


def test_a_node_announces_its_region_and_capacity_class() -> None:
    base = {"id": "n", "address": "h:1"}
    node = parse_node({**base, "region": "eu-west-1", "capacity": "spot"})
    assert (node.region, node.capacity) == ("eu-west-1", "spot")
    old = parse_node(base)  # an older node: no region, on-demand
    assert (old.region, old.capacity) == ("", "on-demand")
    assert parse_node({**base, "capacity": "preemptible-v2"}).capacity == "on-demand"


@given(st.one_of(st.text(max_size=80), st.integers(), st.none(), st.lists(st.text())))
def test_any_announced_region_parses_or_is_refused_with_a_value_error(region: Any) -> None:
    try:
        node = parse_node({"id": "n", "address": "h:1", "region": region})
    except ValueError:
        assert not (isinstance(region, str) and (region == "" or valid_region(region)))
        return
    assert node.region == (region or "")
    assert node.region == "" or valid_region(node.region)


def test_a_static_node_entry_may_name_its_region() -> None:
    assert split_region("10.0.0.5:8201@eu-west") == ("10.0.0.5:8201", "eu-west")
    assert split_region(" 10.0.0.5:8201 ") == ("10.0.0.5:8201", "")
    with pytest.raises(ValueError, match="region"):
        split_region("10.0.0.5:8201@EU WEST")


@given(st.text(max_size=120))
def test_any_static_entry_splits_or_is_refused_with_a_value_error(entry: str) -> None:
    try:
        address, region = split_region(entry)
    except ValueError:
        assert "@" in entry
        return
    assert "@" not in address
    assert region == "" or valid_region(region)


class FlakyDirectory(StaticDirectory):
    def __init__(self, nodes: list[NodeInfo]):
        super().__init__(nodes)
        self.down = False

    async def nodes(self) -> list[NodeInfo]:
        if self.down:
            raise ConnectionError("region lost")
        return self.found


async def test_another_regions_directory_lost_keeps_its_last_nodes_for_a_while() -> None:
    clock = Clock()
    own = FlakyDirectory([_node("a1", "eu")])
    other = FlakyDirectory([_node("b1", "us"), _node("a1", "us")])
    directory = RegionalNodeDirectory(own, [other], stale_s=30.0, clock=clock)
    assert [(n.id, n.region) for n in await directory.nodes()] == [("a1", "eu"), ("b1", "us")]
    other.down = True
    clock.now += 29.0
    assert [n.id for n in await directory.nodes()] == ["a1", "b1"]
    clock.now += 2.0
    assert [n.id for n in await directory.nodes()] == ["a1"]
    own.down = True  # the own directory's failure is the refresh's: the table stays
    with pytest.raises(ConnectionError):
        await directory.nodes()


async def test_a_merged_call_of_job_items_goes_to_spot_and_one_with_a_caller_waiting_does_not() -> (
    None
):
    from modelgate.core.gateway.remote import remote_builder
    from modelgate.core.serving.ports import VersionSource
    from tests.unit.gateway.test_merging import Client as GatedClient
    from tests.unit.gateway.test_merging import _manifest, _x

    client = GatedClient()
    manifest = _manifest()
    infos = [
        NodeInfo("od", "od:1", models={"m": {1: manifest}}),
        NodeInfo("spot", "spot:1", models={"m": {1: manifest}}, capacity="spot"),
    ]
    cluster = Cluster(StaticDirectory(infos), client, rng=random.Random(7))
    await cluster.refresh()
    loaded = remote_builder(cluster, merge_calls=1)(VersionSource(1, "", manifest))
    for criticals, expected in (([False, False], "spot"), ([False, True], "od")):
        client.gate.clear()
        made = len(client.calls)
        first = asyncio.ensure_future(loaded.runtime.infer({"x": _x(1, -1)}, Timing()))
        await client.reached(made + 1)  # held at the node: the next two merge
        calls = asyncio.gather(
            *(loaded.runtime.infer({"x": _x(1, 0)}, Timing(critical=c)) for c in criticals)
        )
        await asyncio.sleep(0)
        client.gate.set()
        await first
        await calls
        assert client.calls[-1].rows == 2
        assert client.calls[-1].node == expected
