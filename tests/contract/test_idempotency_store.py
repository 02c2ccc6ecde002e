"""The IdempotencyStore contract on every backend (memory, SQLite, PostgreSQL): one begin
wins per (caller, key), even when many race; answers round-trip byte for byte; expired
and stale records are taken over, live ones never; complete and release touch only the
record they began; purge; the service on top (replay, mismatch, sealing of secrets)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from modelgate.core.admission.idempotency import IdempotencyService
from modelgate.core.admission.ports import IdempotencyRecord, IdempotencyStore, StoredAnswer
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.crypto import AesGcmCipher
from modelgate.storage.memory.idempotency import MemoryIdempotencyStore
from modelgate.storage.sql.idempotency import SqlIdempotencyStore

from .conftest import WITH_MEMORY, store_factory

T0 = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


@pytest.fixture(params=WITH_MEMORY)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fresh_store(
    backend: str, request: pytest.FixtureRequest
) -> Callable[[], Awaitable[IdempotencyStore]]:
    return store_factory(backend, request, MemoryIdempotencyStore, SqlIdempotencyStore)


@pytest.fixture
async def store(fresh_store: Callable[[], Awaitable[IdempotencyStore]]) -> IdempotencyStore:
    return await fresh_store()


def record(key: str = "k1", at: datetime = T0, owner: str = "ten_1|key:key_1") -> IdempotencyRecord:
    return IdempotencyRecord(owner, key, "POST", "/admin/plans", "h" * 64, at)


async def begin(store: IdempotencyStore, rec: IdempotencyRecord) -> IdempotencyRecord | None:
    now = rec.created_at
    return await store.begin(rec, expired_before=now - DAY, stale_before=now - MINUTE)


async def test_the_first_begin_wins_and_the_answer_round_trips(store: IdempotencyStore) -> None:
    assert await begin(store, record()) is None
    found = await begin(store, record(at=T0 + timedelta(seconds=1)))
    assert found is not None and found.answer is None and found.created_at == T0
    body = bytes(range(256)) + "é".encode()
    answer = StoredAnswer(201, body, "application/json", sealed_with="k1", nonce=b"\x00" * 12)
    assert await store.complete("ten_1|key:key_1", "k1", T0, answer)
    assert not await store.complete("ten_1|key:key_1", "k1", T0, answer)  # once
    found = await begin(store, record(at=T0 + timedelta(hours=2)))
    assert found is not None and found.answer == answer
    assert (found.method, found.path, found.request_hash) == ("POST", "/admin/plans", "h" * 64)


async def test_keys_are_per_caller(store: IdempotencyStore) -> None:
    assert await begin(store, record(owner="ten_1|key:a")) is None
    assert await begin(store, record(owner="ten_1|key:b")) is None
    assert await begin(store, record(owner="ten_2|key:a")) is None


async def test_racing_begins_let_exactly_one_run(store: IdempotencyStore) -> None:
    results = await asyncio.gather(*(begin(store, record()) for _ in range(8)))
    assert sum(r is None for r in results) == 1


async def test_expired_and_stale_records_are_taken_over_live_ones_never(
    store: IdempotencyStore,
) -> None:
    done = StoredAnswer(200, b"{}")
    assert await begin(store, record("finished")) is None
    assert await store.complete("ten_1|key:key_1", "finished", T0, done)
    assert await begin(store, record("running")) is None
    later = T0 + 2 * MINUTE
    assert await begin(store, record("finished", later)) is not None  # kept for a day
    assert await begin(store, record("running", later)) is None  # stale: taken over
    # the first request finishing late does not overwrite the new one's record
    assert not await store.complete("ten_1|key:key_1", "running", T0, done)
    assert not await store.release("ten_1|key:key_1", "running", T0)
    assert await begin(store, record("finished", T0 + DAY + MINUTE)) is None  # expired


async def test_release_frees_an_unfinished_key_only(store: IdempotencyStore) -> None:
    assert await begin(store, record()) is None
    assert await store.release("ten_1|key:key_1", "k1", T0)
    assert await begin(store, record()) is None
    assert await store.complete("ten_1|key:key_1", "k1", T0, StoredAnswer(201, b"x"))
    assert not await store.release("ten_1|key:key_1", "k1", T0)


async def test_purge_deletes_what_is_older(store: IdempotencyStore) -> None:
    for n in range(3):
        assert await begin(store, record(f"k{n}", T0 + n * timedelta(hours=1))) is None
    assert await store.purge(T0 + timedelta(minutes=90)) == 2
    assert await begin(store, record("k2", T0 + timedelta(hours=2))) is not None
    assert await begin(store, record("k0", T0 + timedelta(hours=2))) is None


async def test_text_a_column_cannot_hold_is_invalid(backend: str, store: IdempotencyStore) -> None:
    if backend == "memory":
        pytest.skip("memory holds any text")
    with pytest.raises(ModelgateError) as caught:
        await begin(store, record(key="k" * 256))
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT


async def test_the_service_replays_refuses_and_seals(store: IdempotencyStore) -> None:
    cipher = AesGcmCipher({"k1": base64.b64decode(base64.b64encode(b"s" * 32))})
    service = IdempotencyService(store, cipher, wait_s=0.05)
    run = await service.begin("o", "key-1", "POST", "/admin/tenants/t/keys", b'{"name":"a"}')
    assert run.outcome == "run"
    body = b'{"id":"key_1","secret":"mg_live_x_y"}'
    await service.complete(run, StoredAnswer(201, body), without_secret=b'{"id":"key_1"}')
    again = await service.begin("o", "key-1", "POST", "/admin/tenants/t/keys", b'{"name":"a"}')
    assert again.outcome == "replay" and again.answer == StoredAnswer(201, body)
    assert again.record.answer is not None and b"mg_live" not in again.record.answer.body
    other = await service.begin("o", "key-1", "POST", "/admin/tenants/t/keys", b'{"name":"b"}')
    assert other.outcome == "mismatch"
    plain = IdempotencyService(store)  # no cipher: the secret is withheld
    run = await plain.begin("o", "key-2", "POST", "/p", b"")
    await plain.complete(run, StoredAnswer(201, body), without_secret=b'{"id":"key_1"}')
    withheld = await plain.begin("o", "key-2", "POST", "/p", b"")
    assert withheld.outcome == "withheld" and withheld.answer is not None
    assert withheld.answer.body == b'{"id":"key_1"}'
    blocked = await service.begin("o", "key-3", "POST", "/p", b"")
    assert (await service.begin("o", "key-3", "POST", "/p", b"")).outcome == "in_progress"
    await service.release(blocked)
    assert (await service.begin("o", "key-3", "POST", "/p", b"")).outcome == "run"
    with pytest.raises(ModelgateError) as caught:
        await service.begin("o", "", "POST", "/p", b"")
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
