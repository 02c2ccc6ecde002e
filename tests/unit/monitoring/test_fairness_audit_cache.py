"""The fairness audit cache: identical audits asked together run once, a repeat within the
TTL is answered without reading the store, other questions (another tenant, attribute,
window) are computed apart, authorization is asked on every call, failures are shared but
never kept, and a caller that gives up does not cancel the audit for the others.

Audits are counted where they cost: the reads of the (real, in-memory) feedback store."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from modelgate.core.access.identity import Plan, Principal, Scope
from modelgate.core.monitoring.predictions import LabelledPrediction, LabelQuery
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.fairness.audit_cache import FairnessAuditCache
from modelgate.storage.memory.feedback import MemoryFeedbackStore
from tests.unit.monitoring.test_fairness import FAIR, NOW, _auditor, _manifest, _store

ROWS = [("t1", "1", i % 2, i % 3 == 0, "ab"[i % 2]) for i in range(40)]
ROWS += [("t2", "1", 1, 1, "a")] * 12


def _tenant(tenant_id: str) -> Principal:
    return Principal(tenant_id, "key", frozenset({Scope.MODELS_READ.value}), Plan(name="p"), "k")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _CountingStore:
    """The in-memory store, counting its reads; ``gate`` (when set) holds each read until
    it is opened, so that callers pile up on one running audit; ``fail`` fails reads."""

    def __init__(self, store: MemoryFeedbackStore) -> None:
        self.store = store
        self.reads = 0
        #: set once a read has begun
        self.reading = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def labelled(self, query: LabelQuery) -> list[LabelledPrediction]:
        self.reads += 1
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ModelgateError(ErrorKind.UNAVAILABLE, "the store is down")
        return await self.store.labelled(query)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def _cache(**kw: Any) -> tuple[FairnessAuditCache, _CountingStore, _Clock]:
    store = _CountingStore(await _store(ROWS))
    clock = _Clock()
    auditor = _auditor(store, _manifest(**FAIR))  # type: ignore[arg-type]
    return FairnessAuditCache(auditor, clock=clock, **kw), store, clock


async def test_twenty_identical_audits_at_once_run_one() -> None:
    cache, store, _ = await _cache()
    store.gate = asyncio.Event()
    charged: list[int] = []

    async def charge() -> None:
        charged.append(1)

    callers = [
        asyncio.create_task(cache.audit(_tenant("t1"), "risk", now=NOW, before_computing=charge))
        for _ in range(20)
    ]
    await store.reading.wait()  # the first caller's audit is reading
    for _ in range(50):  # every other caller reaches the running audit and waits on it
        await asyncio.sleep(0)
    store.gate.set()
    reports = await asyncio.gather(*callers)
    assert store.reads == 1
    assert len(charged) == 1  # only the caller that started it pays
    assert all(report is reports[0] for report in reports)
    assert reports[0].versions[0].rows == 40


async def test_a_repeat_within_the_ttl_reads_nothing_and_a_later_one_reads_again() -> None:
    cache, store, clock = await _cache(ttl_s=30)
    first = await cache.audit(_tenant("t1"), "risk", now=NOW)
    clock.now += 29
    assert await cache.audit(_tenant("t1"), "risk", now=NOW + timedelta(seconds=29)) is first
    assert store.reads == 1
    clock.now += 2
    again = await cache.audit(_tenant("t1"), "risk", now=NOW + timedelta(seconds=31))
    assert store.reads == 2
    assert again is not first


async def test_a_ttl_of_zero_keeps_nothing() -> None:
    cache, store, _ = await _cache(ttl_s=0)
    await cache.audit(None, "risk", now=NOW)
    await cache.audit(None, "risk", now=NOW)
    assert store.reads == 2


async def test_other_questions_are_computed_apart() -> None:
    cache, store, _ = await _cache()
    t1 = await cache.audit(_tenant("t1"), "risk", now=NOW)
    t2 = await cache.audit(_tenant("t2"), "risk", now=NOW)
    everyone = await cache.audit(None, "risk", now=NOW)
    one_attribute = await cache.audit(None, "risk", now=NOW, attribute="band")
    windowed = await cache.audit(None, "risk", now=NOW, since=NOW - timedelta(days=1))
    assert store.reads == 5
    assert (t1.tenant_id, t1.versions[0].rows) == ("t1", 40)
    assert (t2.tenant_id, t2.versions[0].rows) == ("t2", 12)
    assert everyone.versions[0].rows == one_attribute.versions[0].rows == 52
    assert windowed.since == NOW - timedelta(days=1)
    # an operator naming a tenant asks the tenant's own question: answered from the cache
    operator = Principal("*", "admin", frozenset({"tenants:admin"}), Plan(name="p"), "admin")
    assert await cache.audit(operator, "risk", now=NOW, tenant_id="t2") is t2
    assert store.reads == 5


async def test_authorization_is_asked_even_when_the_answer_is_kept() -> None:
    cache, store, _ = await _cache()
    await cache.audit(None, "risk", now=NOW, tenant_id="t1")  # kept, for tenant t1
    with pytest.raises(ModelgateError) as other:
        await cache.audit(_tenant("t2"), "risk", now=NOW, tenant_id="t1")
    assert other.value.kind is ErrorKind.NOT_FOUND
    with pytest.raises(ModelgateError) as unknown:
        await cache.audit(None, "nope", now=NOW)
    assert unknown.value.kind is ErrorKind.NOT_FOUND
    assert store.reads == 1


async def test_a_refused_charge_computes_nothing() -> None:
    cache, store, _ = await _cache()

    async def refuse() -> None:
        raise ModelgateError(ErrorKind.RATE_LIMITED, "no more audits", retry_after=5)

    with pytest.raises(ModelgateError) as refused:
        await cache.audit(None, "risk", now=NOW, before_computing=refuse)
    assert refused.value.kind is ErrorKind.RATE_LIMITED
    assert store.reads == 0
    kept = await cache.audit(None, "risk", now=NOW)
    # a kept answer is not charged again
    assert await cache.audit(None, "risk", now=NOW, before_computing=refuse) is kept


async def test_a_failure_is_shared_with_the_waiting_callers_but_not_kept() -> None:
    cache, store, _ = await _cache()
    store.gate, store.fail = asyncio.Event(), True
    callers = [asyncio.create_task(cache.audit(None, "risk", now=NOW)) for _ in range(5)]
    await store.reading.wait()
    for _ in range(20):
        await asyncio.sleep(0)
    store.gate.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert store.reads == 1
    assert all(isinstance(o, ModelgateError) and o.kind is ErrorKind.UNAVAILABLE for o in outcomes)
    store.fail = False
    report = await cache.audit(None, "risk", now=NOW)
    assert store.reads == 2
    assert report.versions[0].rows == 52


async def test_a_caller_that_gives_up_does_not_cancel_the_audit_for_the_others() -> None:
    cache, store, _ = await _cache()
    store.gate = asyncio.Event()
    leaving = asyncio.create_task(cache.audit(None, "risk", now=NOW))
    await store.reading.wait()
    staying = asyncio.create_task(cache.audit(None, "risk", now=NOW))
    for _ in range(20):
        await asyncio.sleep(0)
    leaving.cancel()
    store.gate.set()
    report = await staying
    assert report.versions[0].rows == 52
    assert leaving.cancelled()
    assert store.reads == 1


async def test_the_oldest_answers_are_dropped_beyond_max_entries() -> None:
    cache, store, _ = await _cache(max_entries=2)
    windows = [NOW - timedelta(days=d) for d in (1, 2, 3)]
    for since in windows:
        await cache.audit(None, "risk", now=NOW, since=since)
    assert store.reads == 3
    await cache.audit(None, "risk", now=NOW, since=windows[2])  # kept
    await cache.audit(None, "risk", now=NOW, since=windows[1])  # kept
    assert store.reads == 3
    await cache.audit(None, "risk", now=NOW, since=windows[0])  # dropped: read again
    assert store.reads == 4
