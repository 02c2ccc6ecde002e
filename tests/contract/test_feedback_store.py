"""The FeedbackStore contract on every backend (memory, SQLite, PostgreSQL): predictions come
back exactly, a request id finds the newest inference of its tenant only (transport or OIP
id), labels replace earlier ones and skip missing predictions, windows and paging of
labelled rows, subject rows, erasure and retention purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.monitoring.ports import FeedbackStore
from modelgate.core.monitoring.predictions import FeedbackRecord, LabelQuery, PredictionRecord
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.feedback import MemoryFeedbackStore
from modelgate.storage.sql.feedback import SqlFeedbackStore

from .conftest import WITH_MEMORY

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALICE, BOB = "a" * 64, "b" * 64


@pytest.fixture(params=WITH_MEMORY)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest) -> FeedbackStore:
    if backend == "memory":
        return MemoryFeedbackStore()
    engine: AsyncEngine = request.getfixturevalue("engine")
    return SqlFeedbackStore(engine)


def prediction(
    pid: str,
    row: int = 0,
    *,
    tenant: str = "ten_a",
    request_id: str | None = None,
    inference_id: str | None = None,
    model: str = "m1",
    version: str = "1",
    subject: str | None = ALICE,
    at: datetime = T0,
    days: int = 30,
    predicted: int | None = 1,
    score: float | None = 0.75,
    groups: tuple[tuple[str, str], ...] = (),
) -> PredictionRecord:
    return PredictionRecord(
        id=pid,
        row=row,
        tenant_id=tenant,
        request_id=request_id or f"req-{pid}",
        inference_id=inference_id,
        model=model,
        version=version,
        subject=subject,
        created_at=at,
        expires_at=at + timedelta(days=days),
        predicted=predicted,
        score=score,
        groups=groups,
    )


def label(pid: str, row: int = 0, value: int = 1, at: datetime = T0) -> FeedbackRecord:
    return FeedbackRecord(pid, row, value, at)


async def labelled_ids(store: FeedbackStore, **query: Any) -> list[tuple[str, int]]:
    found = await store.labelled(LabelQuery(**query))
    return [(f.prediction.id, f.prediction.row) for f in found]


async def test_rows_come_back_exactly(store: FeedbackStore) -> None:
    rows = [
        prediction("pr_1", 0, inference_id="oip-1", score=0.123456789),
        prediction("pr_1", 1, inference_id="oip-1", predicted=None, score=None),
    ]
    await store.append(rows)
    await store.append([])
    assert await store.find("ten_a", "req-pr_1") == rows
    assert await store.find("ten_a", "oip-1") == rows


async def test_an_append_is_all_or_nothing(store: FeedbackStore) -> None:
    await store.append([prediction("pr_1")])
    with pytest.raises(Exception):  # noqa: B017, PT011 - a duplicate key: each backend its own
        await store.append([prediction("pr_2"), prediction("pr_1")])
    assert await store.find("ten_a", "req-pr_2") == []


async def test_text_a_column_cannot_hold_is_refused(store: FeedbackStore, backend: str) -> None:
    if backend == "memory":
        pytest.skip("the memory store holds any text")
    with pytest.raises(ModelgateError) as caught:
        await store.append([prediction("pr_1", request_id="x" * 129)])
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    with pytest.raises(ModelgateError):
        await store.append([prediction("pr_1", tenant="nul\x00")])


async def test_find_is_per_tenant_and_answers_the_newest_inference(store: FeedbackStore) -> None:
    await store.append(
        [
            prediction("pr_old", request_id="same", at=T0),
            prediction("pr_new", request_id="same", at=T0 + timedelta(seconds=1)),
            prediction("pr_other", tenant="ten_b", request_id="theirs"),
        ]
    )
    assert [p.id for p in await store.find("ten_a", "same")] == ["pr_new"]
    assert await store.find("ten_a", "theirs") == []
    assert await store.find("ten_b", "same") == []
    assert await store.find("ten_a", "missing") == []
    assert await store.find("ten_a", "x" * 500) == []
    assert await store.find("nul\x00", "same") == []


async def test_a_later_label_replaces_and_missing_predictions_are_skipped(
    store: FeedbackStore,
) -> None:
    await store.append([prediction("pr_1", 0), prediction("pr_1", 1)])
    await store.label([label("pr_1", 0, 0), label("pr_gone", 0, 1)])
    await store.label([label("pr_1", 0, 1, T0 + timedelta(hours=1)), label("pr_1", 1, 0)])
    await store.label([])
    found = await store.labelled(LabelQuery())
    assert [(f.prediction.row, f.label) for f in found] == [(0, 1), (1, 0)]
    assert found[0].labelled_at == T0 + timedelta(hours=1)


async def test_windows_filters_and_paging(store: FeedbackStore) -> None:
    rows = [
        prediction(f"pr_{i}", at=T0 + timedelta(minutes=i), version="2" if i % 2 else "1")
        for i in range(6)
    ]
    rows.append(prediction("pr_unlabelled"))
    rows.append(prediction("pr_m2", model="m2"))
    await store.append(rows)
    await store.label([label(f"pr_{i}") for i in range(6)] + [label("pr_m2")])
    assert await labelled_ids(store, model="m1", version="1") == [
        ("pr_0", 0),
        ("pr_2", 0),
        ("pr_4", 0),
    ]
    assert await labelled_ids(store, model="m1", newest_first=True, limit=2) == [
        ("pr_5", 0),
        ("pr_4", 0),
    ]
    assert await labelled_ids(
        store, model="m1", since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)
    ) == [("pr_2", 0), ("pr_3", 0)]
    assert await labelled_ids(store, model="m1", live_at=T0 + timedelta(days=30, minutes=2)) == [
        ("pr_3", 0),
        ("pr_4", 0),
        ("pr_5", 0),
    ]
    first = await labelled_ids(store, model="m1", limit=4)
    rest = await labelled_ids(store, model="m1", after=(T0 + timedelta(minutes=3), "pr_3", 0))
    assert first + rest == [(f"pr_{i}", 0) for i in range(6)]
    assert await labelled_ids(store, model="x" * 300) == []


async def test_paging_within_one_inference_goes_by_row(store: FeedbackStore) -> None:
    await store.append([prediction("pr_1", row) for row in range(3)])
    await store.label([label("pr_1", row) for row in range(3)])
    assert await labelled_ids(store, after=(T0, "pr_1", 0)) == [("pr_1", 1), ("pr_1", 2)]


async def test_subject_rows_erasure_and_purge(store: FeedbackStore) -> None:
    await store.append(
        [
            prediction("pr_a1", subject=ALICE),
            prediction("pr_a2", subject=ALICE, tenant="ten_b"),
            prediction("pr_b", subject=BOB, days=1),
            prediction("pr_none", subject=None, days=1),
        ]
    )
    await store.label([label("pr_a1"), label("pr_b")])
    rows = await store.subject_rows([ALICE], "ten_a")
    assert [(r.prediction.id, r.label) for r in rows] == [("pr_a1", 1)]
    assert len(await store.subject_rows([ALICE], None)) == 2
    assert await store.delete_subject([ALICE], "ten_a") == 1
    assert await store.delete_subject([ALICE], "ten_a") == 0
    assert [r.prediction.id for r in await store.subject_rows([ALICE], None)] == ["pr_a2"]
    assert await store.delete_subject(["nul\x00"], None) == 0
    assert await store.purge(T0 + timedelta(days=1)) == 2
    assert await store.purge(T0 + timedelta(days=1)) == 0
    assert await store.labelled(LabelQuery()) == []
    assert await store.find("ten_a", "req-pr_b") == []


async def test_protected_groups_come_back_with_their_labelled_predictions(
    store: FeedbackStore,
) -> None:
    grouped = prediction("pg1", groups=(("age_band", "3"), ("region", "nörd")))
    await store.append([grouped, prediction("pg2")])
    await store.label([label("pg1", value=0), label("pg2", value=1)])
    found = await store.labelled(LabelQuery(model="m1"))
    assert {(f.prediction.id, f.prediction.groups, f.label) for f in found} == {
        ("pg1", (("age_band", "3"), ("region", "nörd")), 0),
        ("pg2", (), 1),
    }
