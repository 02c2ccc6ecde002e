"""The gateway's choice of node, in-process: CPU µs per ``Cluster._choose`` call (the
per-request part of forwarding that regions and capacity classes touch), for a table of
``--nodes`` nodes serving the model. ``--regions``: the gateway has a region and the nodes
are spread over three; ``--spot``: a third of the nodes are spot. Run it against two trees
to compare (``PYTHONPATH=<tree>/src python -m bench.node_choice``); prints one number."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import random
import time

from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.nodes import NodeInfo
from modelgate.core.serving.manifest import parse_manifest
from modelgate.testing import StaticDirectory

MANIFEST = parse_manifest(
    "m",
    {
        "runtime": "remote",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    },
)


def _cluster(count: int, regions: bool, spot: bool) -> Cluster:
    extra = {}
    fields = inspect.signature(NodeInfo).parameters
    nodes = []
    for n in range(count):
        if "region" in fields and regions:
            extra["region"] = ("eu", "us", "ap")[n % 3]
        if "capacity" in fields and spot:
            extra["capacity"] = "spot" if n % 3 == 0 else "on-demand"
        nodes.append(NodeInfo(f"n{n}", f"n{n}:1", models={"m": {1: MANIFEST}}, **extra))
    kwargs = {}
    if regions:
        from modelgate.core.gateway.regions import RegionPolicy

        kwargs["regions"] = RegionPolicy("eu", ["us"])
    cluster = Cluster(StaticDirectory(nodes), None, rng=random.Random(1), **kwargs)  # type: ignore[arg-type]
    asyncio.run(cluster.refresh())
    return cluster


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--regions", action="store_true")
    parser.add_argument("--spot", action="store_true")
    args = parser.parse_args()
    cluster = _cluster(args.nodes, args.regions, args.spot)
    choose = cluster._choose
    tried: set[str] = set()
    for _ in range(10_000):
        choose("m", 1, "cpu", tried)
    started = time.process_time()
    for _ in range(args.calls):
        choose("m", 1, "cpu", tried)
    print(f"{(time.process_time() - started) / args.calls * 1e6:.3f}")


if __name__ == "__main__":
    main()
