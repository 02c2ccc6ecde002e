"""The DeploymentStore contract on every backend (memory, SQLite, PostgreSQL): round trips,
compare and set on the revision, listing, deletion, and text the columns cannot hold."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from modelgate.core.traffic.deployments import Canary, CanaryGate, Deployment, Shadow, Variant
from modelgate.core.traffic.ports import DeploymentStore
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.deployments import MemoryDeploymentStore
from modelgate.storage.sql.deployments import SqlDeploymentStore

from .conftest import WITH_MEMORY, store_factory

T0 = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@pytest.fixture(params=WITH_MEMORY)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fresh_store(
    backend: str, request: pytest.FixtureRequest
) -> Callable[[], Awaitable[DeploymentStore]]:
    return store_factory(backend, request, MemoryDeploymentStore, SqlDeploymentStore)


@pytest.fixture
async def store(fresh_store: Callable[[], Awaitable[DeploymentStore]]) -> DeploymentStore:
    return await fresh_store()


def canary_deployment(model: str = "credit-risk", revision: int = 1) -> Deployment:
    return Deployment(
        model=model,
        default_version=1,
        canary=Canary(
            version=2,
            steps=(5, 25, 50, 100),
            step_seconds=60.0,
            gate=CanaryGate(min_requests=7, max_error_rate_increase=0.1, max_p95_ratio=2.0),
            step=1,
            step_started_at=T0 + timedelta(seconds=3),
            started_at=T0 + timedelta(seconds=1),
        ),
        shadow=Shadow(3, 40),
        revision=revision,
        updated_at=T0,
        updated_by="key:key_abc",
        note="set",
    )


async def test_a_deployment_comes_back_as_it_was_written(store: DeploymentStore) -> None:
    written = canary_deployment()
    assert await store.get("credit-risk") is None
    assert await store.put(written, 0)
    assert await store.get("credit-risk") == written
    split = Deployment(
        model="other",
        default_version=2,
        split=(Variant(1, 30), Variant(2, 70)),
        revision=1,
        updated_at=T0,
        updated_by="cli:alice",
    )
    assert await store.put(split, 0)
    assert await store.list() == [written, split]


async def test_put_is_compare_and_set_on_the_revision(store: DeploymentStore) -> None:
    first = canary_deployment()
    assert await store.put(first, 0)
    assert not await store.put(first, 0)  # created already
    second = first.next_revision(T0 + timedelta(minutes=1), "system:canary-gate", "x", canary=None)
    assert await store.put(second, 1)
    stale = first.next_revision(T0 + timedelta(minutes=2), "key:k", "late", split=())
    assert not await store.put(stale, 1)  # read at revision 1, but 2 is stored
    assert await store.get("credit-risk") == second


async def test_of_writers_racing_on_one_revision_exactly_one_wins(
    store: DeploymentStore,
) -> None:
    base = canary_deployment()
    assert await store.put(base, 0)
    racers = [
        base.next_revision(T0 + timedelta(seconds=i), f"key:{i}", f"writer {i}") for i in range(5)
    ]
    results = await asyncio.gather(*(store.put(r, 1) for r in racers))
    assert sorted(results) == [False, False, False, False, True]
    winner = racers[results.index(True)]
    assert await store.get("credit-risk") == winner


async def test_delete_removes_and_says_whether_there_was_one(store: DeploymentStore) -> None:
    assert await store.put(canary_deployment(), 0)
    assert await store.delete("credit-risk")
    assert not await store.delete("credit-risk")
    assert await store.get("credit-risk") is None
    assert await store.list() == []
    assert await store.put(canary_deployment(), 0)  # and can be made again


async def test_a_revision_that_does_not_follow_the_expected_one_is_refused(
    store: DeploymentStore,
) -> None:
    with pytest.raises(ValueError, match="revision"):
        await store.put(canary_deployment(revision=3), 0)


@pytest.mark.parametrize("model", ["m" * 257, "nul\x00model"])
async def test_text_the_columns_cannot_hold_is_invalid(store: DeploymentStore, model: str) -> None:
    with pytest.raises(ModelgateError) as raised:
        await store.put(canary_deployment(model=model), 0)
    assert raised.value.kind is ErrorKind.INVALID_ARGUMENT
    assert await store.get(model) is None


async def test_unusual_model_names_are_only_data(store: DeploymentStore) -> None:
    name = "'; DROP TABLE deployments; -- ✓"
    written = replace(canary_deployment(), model=name)
    assert await store.put(written, 0)
    assert await store.get(name) == written
