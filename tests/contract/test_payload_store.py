"""The PayloadStore contract on every backend (memory, SQLite, PostgreSQL): rows and their
sealed bytes come back exactly, filters and paging, erasure by pseudonym (per tenant or
everywhere), retention purge, re-sealing, and tenants' consent settings."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.governance.ports import (
    PayloadConsent,
    PayloadQuery,
    PayloadRecord,
    PayloadStore,
)
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.payloads import MemoryPayloadStore
from modelgate.storage.sql.payloads import SqlPayloadStore
from modelgate.storage.sql.schema import payload_logs

from .conftest import WITH_MEMORY

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALICE, BOB = "a" * 64, "b" * 64


@pytest.fixture(params=WITH_MEMORY)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest) -> PayloadStore:
    if backend == "memory":
        return MemoryPayloadStore()
    engine: AsyncEngine = request.getfixturevalue("engine")
    return SqlPayloadStore(engine)


def row(
    record_id: str,
    *,
    tenant: str = "ten_a",
    model: str = "m1",
    subject: str | None = ALICE,
    at: datetime = T0,
    days: int = 30,
    cipher_key: str = "k1",
) -> PayloadRecord:
    return PayloadRecord(
        id=record_id,
        tenant_id=tenant,
        key_id="key_1",
        model=model,
        version="1",
        subject=subject,
        purpose="quality review",
        created_at=at,
        expires_at=at + timedelta(days=days),
        redactions={"email": 2, "card": 1},
        cipher_key=cipher_key,
        nonce=os.urandom(12),
        ciphertext=os.urandom(64) + b"\x00\xff",
    )


async def ids(store: PayloadStore, **query: object) -> list[str]:
    return [r.id for r in await store.find(PayloadQuery(**query))]  # type: ignore[arg-type]


async def test_rows_come_back_exactly(store: PayloadStore) -> None:
    written = [row("pl_1", at=T0.astimezone(UTC)), row("pl_2", subject=None)]
    await store.append(written)
    assert await store.find(PayloadQuery()) == written
    await store.append([])


async def test_an_append_is_all_or_nothing(store: PayloadStore) -> None:
    await store.append([row("pl_1")])
    with pytest.raises(Exception):  # noqa: B017, PT011 - a duplicate id: each backend its own
        await store.append([row("pl_2"), row("pl_1")])
    assert await ids(store) == ["pl_1"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])  # memory holds any text
async def test_text_no_column_can_hold_is_refused(store: PayloadStore) -> None:
    for bad in (row("pl_x", model="m" * 300), row("pl_x", tenant="t\x00")):
        with pytest.raises(ModelgateError) as caught:
            await store.append([row("pl_ok"), bad])
        assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert await ids(store) == []


async def test_find_filters_orders_and_pages(store: PayloadStore) -> None:
    await store.append(
        [
            row("pl_3", at=T0 + timedelta(minutes=2)),
            row("pl_1", at=T0),
            row("pl_2", at=T0, model="m2", subject=BOB),
            row("pl_4", at=T0 + timedelta(minutes=5), tenant="ten_b", days=1),
            row("pl_5", at=T0 + timedelta(days=2), cipher_key="k2"),
        ]
    )
    assert await ids(store) == ["pl_1", "pl_2", "pl_3", "pl_4", "pl_5"]
    assert await ids(store, tenant_id="ten_a") == ["pl_1", "pl_2", "pl_3", "pl_5"]
    assert await ids(store, model="m2") == ["pl_2"]
    assert await ids(store, subjects=(BOB,)) == ["pl_2"]
    assert await ids(store, subjects=(ALICE, BOB), tenant_id="ten_b") == ["pl_4"]
    assert await ids(store, since=T0 + timedelta(minutes=2)) == ["pl_3", "pl_4", "pl_5"]
    assert await ids(store, until=T0 + timedelta(minutes=2)) == ["pl_1", "pl_2"]
    assert await ids(store, live_at=T0 + timedelta(days=1, minutes=5)) == [
        "pl_1",
        "pl_2",
        "pl_3",
        "pl_5",
    ]
    assert await ids(store, not_sealed_with="k1") == ["pl_5"]
    assert await ids(store, limit=2) == ["pl_1", "pl_2"]
    assert await ids(store, limit=2, after=(T0, "pl_1")) == ["pl_2", "pl_3"]
    assert await ids(store, after=(T0 + timedelta(minutes=5), "pl_4")) == ["pl_5"]
    # filters no column can hold match nothing
    assert await ids(store, tenant_id="x" * 500) == []
    assert await ids(store, subjects=("s\x00",)) == []


async def test_erasure_by_pseudonym_in_one_tenant_or_everywhere(store: PayloadStore) -> None:
    await store.append(
        [
            row("pl_1"),
            row("pl_2", subject=BOB),
            row("pl_3", tenant="ten_b"),
            row("pl_4", subject=None),
        ]
    )
    assert await store.delete_subject([ALICE], "ten_b") == 1
    assert await ids(store) == ["pl_1", "pl_2", "pl_4"]
    assert await store.delete_subject([ALICE, BOB], None) == 2
    assert await store.delete_subject([ALICE, BOB], None) == 0
    assert await store.delete_subject(["x" * 100], "t" * 500) == 0
    assert await ids(store) == ["pl_4"]


async def test_purge_deletes_what_expired(store: PayloadStore) -> None:
    await store.append([row("pl_1", days=1), row("pl_2", days=2), row("pl_3", days=30)])
    assert await store.purge(T0 + timedelta(hours=23)) == 0
    assert await store.purge(T0 + timedelta(days=1)) == 1  # expires_at <= now
    assert await store.purge(T0 + timedelta(days=3)) == 1
    assert await store.purge(T0 + timedelta(days=3)) == 0
    assert await ids(store) == ["pl_3"]


async def test_reseal_replaces_the_sealed_payload(store: PayloadStore) -> None:
    await store.append([row("pl_1")])
    nonce, sealed = os.urandom(12), os.urandom(80)
    assert await store.reseal("pl_1", "k2", nonce, sealed)
    assert not await store.reseal("pl_nobody", "k2", nonce, sealed)
    [record] = await store.find(PayloadQuery())
    assert (record.cipher_key, record.nonce, record.ciphertext) == ("k2", nonce, sealed)


async def test_consent_settings_upsert_and_list(store: PayloadStore) -> None:
    assert await store.get_consent("ten_a") is None
    assert await store.list_consents() == []
    first = PayloadConsent("ten_b", True, "evaluation", 7, T0)
    await store.set_consent(first)
    await store.set_consent(PayloadConsent("ten_a", True, None, None, T0))
    changed = PayloadConsent("ten_b", False, None, None, T0 + timedelta(hours=1))
    await store.set_consent(changed)
    assert await store.get_consent("ten_b") == changed
    assert [c.tenant_id for c in await store.list_consents()] == ["ten_a", "ten_b"]
    assert await store.get_consent("x" * 500) is None


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_stored_bytes_are_the_sealed_ones(engine: AsyncEngine) -> None:
    store = SqlPayloadStore(engine)
    record = row("pl_1")
    await store.append([record])
    async with engine.connect() as connection:
        stored = (await connection.execute(select(payload_logs))).one()._mapping
    assert bytes(stored["ciphertext"]) == record.ciphertext
    assert stored["subject"] == ALICE
