"""The batcher takes waiting requests per tenant in turn (issue 15): deficit round robin
by rows, weighted; one tenant's queued rows hold another's back by at most one batch; a
full queue pushes out the tenant holding most of it."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.serving.batching import BatchingRuntime
from modelgate.core.serving.execution import PredictorRuntime
from modelgate.core.serving.fair_queue import FairQueue
from modelgate.core.serving.manifest import BatchingPolicy
from modelgate.core.serving.ports import Arrays, Timing
from modelgate.errors import ErrorKind, ModelgateError


@dataclass
class Item:
    tenant: str | None
    rows: int
    weight: float = 1.0
    key: Hashable = ()
    enqueued_ns: int = 0
    seq: int = field(default=0)


def never(_: Item) -> bool:
    return False


def drain(queue: FairQueue[Item], limit: int) -> list[list[Item]]:
    batches = []
    while queue:
        batch = queue.take(limit, never)
        assert batch, "a non-empty queue always gives a batch"
        batches.append(batch)
    return batches


def test_one_row_waits_behind_at_most_one_batch_of_another_tenants_thousand() -> None:
    queue: FairQueue[Item] = FairQueue()
    for _ in range(250):
        queue.push(Item("flood", 4))
    queue.push(Item("small", 1))
    batches = drain(queue, 32)
    first = next(i for i, b in enumerate(batches) if any(x.tenant == "small" for x in b))
    assert first <= 1
    assert sum(x.rows for b in batches for x in b) == 1001


def test_rows_follow_the_weights() -> None:
    queue: FairQueue[Item] = FairQueue()
    for _ in range(2000):
        queue.push(Item("gold", 1, weight=300.0))
        queue.push(Item("basic", 1, weight=100.0))
    got: Counter[str | None] = Counter()
    for _ in range(40):  # 40 batches of 32 rows, both tenants still waiting
        for item in queue.take(32, never):
            got[item.tenant] += item.rows
    assert got["gold"] + got["basic"] == 40 * 32
    assert 2.7 < got["gold"] / got["basic"] < 3.3


def test_a_single_tenant_is_served_in_arrival_order_and_shapes_merge() -> None:
    queue: FairQueue[Item] = FairQueue()
    items = [Item(None, 1, key=(i % 2,), seq=i) for i in range(6)]
    for item in items:
        queue.push(item)
    batches = drain(queue, 8)
    assert [[x.seq for x in b] for b in batches] == [[0, 2, 4], [1, 3, 5]]


def test_a_full_queue_pushes_out_the_tenant_holding_most() -> None:
    queue: FairQueue[Item] = FairQueue()
    for i in range(10):
        queue.push(Item("flood", 1, seq=i))
    queue.push(Item("small", 1))
    pushed = queue.push_out("small", 1.0)
    assert pushed is not None and pushed.tenant == "flood" and pushed.seq == 9
    assert queue.push_out("flood", 1.0) is None  # the flooder itself is refused
    heavy = queue.push_out("vip", 100.0)  # a heavier newcomer may push out too
    assert heavy is not None and heavy.tenant == "flood"
    assert len(queue) == 9 and queue.rows == 9


@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(1, 8), st.integers(0, 1)),
        min_size=1,
        max_size=120,
    ),
    st.dictionaries(st.integers(0, 4), st.sampled_from([1.0, 2.0, 10.0, 500.0])),
)
def test_every_request_comes_out_once_in_its_tenants_order_and_everyone_gets_a_turn(
    pushes: list[tuple[int, int, int]], weights: dict[int, float]
) -> None:
    limit = 8
    queue: FairQueue[Item] = FairQueue()
    for seq, (who, rows, shape) in enumerate(pushes):
        queue.push(Item(f"t{who}", rows, weight=weights.get(who, 1.0), key=(shape,), seq=seq))
    tenants = {f"t{who}" for who, _, _ in pushes}
    batches = drain(queue, limit)
    assert len(queue) == 0 and queue.rows == 0
    out = [x for b in batches for x in b]
    assert sorted(x.seq for x in out) == list(range(len(pushes)))
    for batch in batches:
        assert sum(x.rows for x in batch) <= limit
        assert len({x.key for x in batch}) == 1
    # a tenant's requests of one shape and size keep their order (a smaller one may fill
    # the room a bigger one leaves, as before)
    for name, shape, rows in {(x.tenant, x.key, x.rows) for x in out}:
        seqs = [x.seq for x in out if (x.tenant, x.key, x.rows) == (name, shape, rows)]
        assert seqs == sorted(seqs)
    # every tenant's first request runs within the first rounds: each other tenant's turn
    # lasts at most one batch, and a turn's credit reaches a whole batch after `limit` turns
    for name in tenants:
        first = next(i for i, b in enumerate(batches) if any(x.tenant == name for x in b))
        assert first <= 2 * len(tenants) * limit


class _Owners:
    """y = x; records the owners (the value of x) of each call's rows."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []
        self._lock = threading.Lock()

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        with self._lock:
            self.calls.append([float(v) for v in inputs["x"][:, 0]])
        return {"y": inputs["x"].copy()}

    def close(self) -> None:
        pass


def _rows(owner: float, n: int) -> dict[str, np.ndarray[Any, Any]]:
    return {"x": np.full((n, 2), owner, dtype=np.float32)}


@pytest.mark.parametrize("offload", [False, True])
async def test_the_batcher_serves_the_small_tenant_within_a_batch_of_the_flood(
    offload: bool,
) -> None:
    predictor = _Owners()
    batcher = BatchingRuntime(
        PredictorRuntime(predictor, offload=offload),
        BatchingPolicy(max_batch_size=32, max_queue_delay_us=0, max_queue_size=1024),
    )
    flood = [
        asyncio.ensure_future(batcher.infer(_rows(1.0, 4), Timing(tenant="flood")))
        for _ in range(250)
    ]
    small = asyncio.ensure_future(batcher.infer(_rows(2.0, 1), Timing(tenant="small")))
    results = await asyncio.gather(*flood, small)
    assert all(r["y"].shape[0] == 4 for r in results[:-1]) and results[-1]["y"][0, 0] == 2.0
    first = next(i for i, owners in enumerate(predictor.calls) if 2.0 in owners)
    assert first <= 1, f"the small tenant's row ran in batch {first} of {len(predictor.calls)}"


async def test_a_full_batcher_refuses_the_flood_not_the_newcomer() -> None:
    gate = threading.Event()

    class Held(_Owners):
        def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
            gate.wait(5)
            return super().predict(inputs)

    batcher = BatchingRuntime(
        PredictorRuntime(Held(), offload=True),
        BatchingPolicy(max_batch_size=1, max_queue_delay_us=0, max_queue_size=4),
    )
    running = asyncio.ensure_future(batcher.infer(_rows(0.0, 1), Timing(tenant="flood")))
    await asyncio.sleep(0.05)  # the first request holds the model
    flood = [
        asyncio.ensure_future(batcher.infer(_rows(1.0, 1), Timing(tenant="flood")))
        for _ in range(4)
    ]
    await asyncio.sleep(0)
    with pytest.raises(ModelgateError) as refused:
        await batcher.infer(_rows(1.0, 1), Timing(tenant="flood"))
    assert refused.value.kind is ErrorKind.OVERLOADED
    small = asyncio.ensure_future(batcher.infer(_rows(2.0, 1), Timing(tenant="small")))
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(running, *flood, small, return_exceptions=True)
    pushed = [o for o in outcomes if isinstance(o, ModelgateError)]
    assert len(pushed) == 1 and pushed[0].kind is ErrorKind.OVERLOADED
    assert isinstance(outcomes[4], ModelgateError)  # the flood's newest was pushed out
    assert not isinstance(outcomes[-1], BaseException)  # the newcomer was served
