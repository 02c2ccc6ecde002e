"""The AuditLog contract on every SQL backend: a single unbroken hash chain, even under
concurrent appends from two engines (as from two processes), and tampering detected."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.access.audit import GENESIS, AuditEntry, AuditRecord, chain_hash
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.sql.audit import SqlAuditLog
from modelgate.storage.sql.engine import create_engine
from modelgate.storage.sql.schema import audit_log

T0 = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def entry(n: int, tenant_id: str | None = "t1", target: str | None = None) -> AuditEntry:
    return AuditEntry(
        actor="key:k-admin",
        action="key.revoke",
        target=target or f"key:k{n}",
        at=T0 + timedelta(seconds=n),
        source_ip="203.0.113.7",
        before={"name": f"key {n}", "scopes": ["infer"], "ratio": 0.1, "n": n},
        after={"revoked_at": (T0 + timedelta(seconds=n)).isoformat(), "note": "é ✓ 😀"},
        tenant_id=tenant_id,
    )


@pytest.fixture
def log(engine: AsyncEngine) -> SqlAuditLog:
    return SqlAuditLog(engine)


async def appended(log: SqlAuditLog, count: int) -> list[AuditRecord]:
    return [await log.append(entry(n)) for n in range(1, count + 1)]


def test_the_hash_is_sha256_of_the_previous_hash_and_canonical_json() -> None:
    # Pinned: changing the canonical form would break every stored chain.
    one = AuditEntry(
        actor="a",
        action="b",
        target="c",
        at=datetime(2025, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))),
        after={"z": 1, "a": [1.5, None, "é"]},
    )
    canonical = (
        '{"action":"b","actor":"a","after":{"a":[1.5,null,"\\u00e9"],"z":1},'
        '"at":"2025-01-01T00:00:00.000000+00:00","before":null,"source_ip":null,'
        '"target":"c","tenant_id":null}'
    )
    expected = hashlib.sha256((GENESIS + canonical).encode()).hexdigest()
    assert chain_hash(GENESIS, one) == expected


async def test_appends_link_into_one_chain_from_seq_1(log: SqlAuditLog) -> None:
    records = await appended(log, 3)

    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    for n, record in enumerate(records, start=1):
        assert record.entry == entry(n)
        assert record.hash == chain_hash(record.prev_hash, entry(n))


async def test_a_record_reads_back_as_it_was_returned(log: SqlAuditLog) -> None:
    local = datetime(2025, 6, 1, 9, 30, 0, 123, tzinfo=timezone(timedelta(hours=-4)))
    returned = await log.append(
        AuditEntry(
            actor="admin",
            action="plan.create",
            target="plan:pro",
            at=local,
            after={"name": "pro", "models": ("a", "b"), "burst": None, "nested": {"x": [1]}},
        )
    )
    [stored] = await log.list()
    assert stored == returned
    assert stored.at == local and stored.at.tzinfo is UTC
    assert stored.after == {
        "name": "pro",
        "models": ["a", "b"],
        "burst": None,
        "nested": {"x": [1]},
    }
    assert stored.before is None and stored.source_ip is None and stored.tenant_id is None
    assert (await log.verify()).ok


async def test_list_pages_and_filters(log: SqlAuditLog) -> None:
    await log.append(entry(1, tenant_id="t1", target="tenant:t1"))
    await log.append(entry(2, tenant_id="t2", target="tenant:t2"))
    await log.append(entry(3, tenant_id=None, target="plan:pro"))
    await log.append(entry(4, tenant_id="t1", target="key:k4"))
    await log.append(entry(5, tenant_id="t1", target="tenant:t1"))

    assert [r.seq for r in await log.list()] == [1, 2, 3, 4, 5]
    assert [r.seq for r in await log.list(after_seq=2, limit=2)] == [3, 4]
    assert [r.seq for r in await log.list(after_seq=5)] == []
    assert [r.seq for r in await log.list(tenant_id="t1")] == [1, 4, 5]
    assert [r.seq for r in await log.list(tenant_id="t1", after_seq=1, limit=1)] == [4]
    assert [r.seq for r in await log.list(target="tenant:t1")] == [1, 5]
    assert [r.seq for r in await log.list(tenant_id="t2", target="tenant:t1")] == []
    assert await log.list(tenant_id="no\x00such") == []
    with pytest.raises(ModelgateError) as caught:
        await log.list(limit=0)
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT


async def test_an_empty_and_an_intact_trail_verify(log: SqlAuditLog) -> None:
    empty = await log.verify()
    assert (empty.ok, empty.checked, empty.first_bad_seq) == (True, 0, None)
    await appended(log, 5)
    intact = await log.verify()
    assert (intact.ok, intact.checked, intact.first_bad_seq) == (True, 5, None)


async def test_an_edited_record_is_found(log: SqlAuditLog, engine: AsyncEngine) -> None:
    await appended(log, 5)
    async with engine.begin() as connection:
        await connection.execute(
            update(audit_log).where(audit_log.c.seq == 3).values(actor="someone-else")
        )
    result = await log.verify()
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 3, 3)
    assert "hash" in result.reason


async def test_an_edit_that_rehashes_its_record_breaks_the_next_link(
    log: SqlAuditLog, engine: AsyncEngine
) -> None:
    records = await appended(log, 5)
    forged = AuditEntry(**{**_fields(records[2].entry), "action": "nothing.happened"})
    async with engine.begin() as connection:
        await connection.execute(
            update(audit_log)
            .where(audit_log.c.seq == 3)
            .values(action=forged.action, hash=chain_hash(records[2].prev_hash, forged))
        )
    result = await log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "prev_hash" in result.reason


async def test_a_deleted_record_is_found(log: SqlAuditLog, engine: AsyncEngine) -> None:
    await appended(log, 5)
    async with engine.begin() as connection:
        await connection.execute(delete(audit_log).where(audit_log.c.seq == 3))
    result = await log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "missing" in result.reason


async def test_a_deleted_first_record_is_found(log: SqlAuditLog, engine: AsyncEngine) -> None:
    await appended(log, 2)
    async with engine.begin() as connection:
        await connection.execute(delete(audit_log).where(audit_log.c.seq == 1))
    result = await log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 1)


async def test_verify_reads_past_one_page(log: SqlAuditLog, engine: AsyncEngine) -> None:
    # bypass append for speed: a valid chain written directly, longer than a page
    rows, prev = [], GENESIS
    for n in range(1, 1203):
        e = entry(n)
        digest = chain_hash(prev, e)
        rows.append({**_fields(e), "seq": n, "prev_hash": prev, "hash": digest})
        prev = digest
    async with engine.begin() as connection:
        await connection.execute(audit_log.insert(), rows)
        await connection.execute(
            update(audit_log).where(audit_log.c.seq == 1102).values(target="key:other")
        )
    result = await log.verify()
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 1102, 1102)


async def test_concurrent_appends_from_two_engines_never_fork_the_chain(
    log: SqlAuditLog, engine_url: str
) -> None:
    # Two engines have separate connection pools, as two processes would.
    other_engine = create_engine(engine_url)
    try:
        other = SqlAuditLog(other_engine)
        writers = [log if n % 2 else other for n in range(50)]
        results = await asyncio.gather(*(w.append(entry(n)) for n, w in enumerate(writers)))
    finally:
        await other_engine.dispose()

    assert sorted(r.seq for r in results) == list(range(1, 51))
    stored = await log.list(limit=100)
    assert [r.seq for r in stored] == list(range(1, 51))
    assert sorted(stored, key=lambda r: r.seq) == sorted(results, key=lambda r: r.seq)
    result = await log.verify()
    assert (result.ok, result.checked) == (True, 50)


APPENDER = """
import asyncio, sys
from datetime import UTC, datetime
from modelgate.core.access.audit import AuditEntry
from modelgate.storage.sql.audit import SqlAuditLog
from modelgate.storage.sql.engine import create_engine

async def main(url, count):
    engine = create_engine(url)
    log = SqlAuditLog(engine)
    print("ready", flush=True)
    sys.stdin.readline()
    at = datetime.now(UTC)
    await asyncio.gather(*(
        log.append(AuditEntry(actor="other-process", action="x", target=f"t{n}", at=at))
        for n in range(count)
    ))
    await engine.dispose()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_appends_from_another_process_join_the_same_chain(
    log: SqlAuditLog, engine_url: str
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        APPENDER,
        engine_url,
        "25",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        await asyncio.gather(*(log.append(entry(n)) for n in range(25)))
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()

    stored = await log.list(limit=100)
    assert [r.seq for r in stored] == list(range(1, 51))
    assert sum(r.actor == "other-process" for r in stored) == 25
    result = await log.verify()
    assert (result.ok, result.checked) == (True, 50)


@pytest.mark.parametrize(
    "bad",
    [
        AuditEntry(actor="a", action="b", target="c", at=datetime(2025, 1, 1)),
        AuditEntry(actor="a", action="b", target="c", at=T0, before={"x": float("nan")}),
        AuditEntry(actor="a", action="b", target="c", at=T0, after={"when": T0}),
        AuditEntry(actor="a\x00", action="b", target="c", at=T0),
        AuditEntry(actor="a", action="b", target="c" * 257, at=T0),
    ],
    ids=["naive-time", "nan", "datetime-value", "nul", "too-long"],
)
async def test_an_entry_no_backend_can_hold_is_refused_and_nothing_stored(
    log: SqlAuditLog, bad: AuditEntry
) -> None:
    with pytest.raises(ModelgateError) as caught:
        await log.append(bad)
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert await log.list() == []
    assert (await log.append(entry(1))).seq == 1


def _fields(e: AuditEntry) -> dict[str, object]:
    return {name: getattr(e, name) for name in AuditEntry.__dataclass_fields__}
