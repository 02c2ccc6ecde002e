"""The refusal memo: a refused caller is refused again from a lookup, only while certain."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.abuse import COUNTED
from modelgate.core.admission.admission import Admission
from modelgate.core.admission.quotas import Quotas
from modelgate.core.admission.refusals import RefusalMemo
from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.quotas import MemoryQuotaCounter
from modelgate.storage.memory.rate_limits import MemoryRateLimiter

MANIFEST = {
    "runtime": "python",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}
#: a UTC instant well inside a day, so that a test's few seconds never cross midnight
BASE = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    """One clock for the limiter (ns), the quota counter, the quotas (UTC) and the memo."""

    now: float = 1000.0

    def seconds(self) -> float:
        return self.now

    def ns(self) -> int:
        return int(self.now * 1_000_000_000)

    def utc(self) -> datetime:
        return BASE + timedelta(seconds=self.now)


@dataclass
class Recorder:
    refusals: list[tuple[str, str]] = field(default_factory=list)

    def refused(self, tenant: str, reason: str) -> None:
        self.refusals.append((tenant, reason))


def principal(tenant: str = "t", key: str = "k", **plan: object) -> Principal:
    return Principal(tenant, key, frozenset({"infer"}), Plan("p", **plan))  # type: ignore[arg-type]


def manifest(name: str = "m", rps: float | None = None, burst: int | None = None) -> ModelManifest:
    extra = {"rate_limit": {"requests_per_second": rps, "burst": burst}} if rps else {}
    return parse_manifest(name, {**MANIFEST, **extra})


def world(clock: Clock, **memo: object) -> tuple[Admission, RefusalMemo, Recorder]:
    recorder = Recorder()
    refusals = RefusalMemo(clock=clock.seconds, observer=recorder, **memo)  # type: ignore[arg-type]
    quotas = Quotas(MemoryQuotaCounter(clock=clock.seconds), now=clock.utc)
    admission = Admission(
        MemoryRateLimiter(clock_ns=clock.ns),
        quotas=quotas,
        memo=refusals,
        observer=recorder,  # type: ignore[arg-type]
    )
    return admission, refusals, recorder


async def refused_by_admission(
    admission: Admission, who: Principal, model: ModelManifest, rows: int = 1
) -> ModelgateError:
    with pytest.raises(ModelgateError) as info:
        await admission.admit(who, model, rows, (model.name, None))
    return info.value


async def test_a_refused_key_is_refused_again_until_one_request_fits_and_no_longer() -> None:
    clock = Clock()
    admission, memo, recorder = world(clock, max_ttl_s=60.0)
    who, model = principal(requests_per_second=2.0, burst=1), manifest()
    await admission.admit(who, model)
    admission.release(who)
    error = await refused_by_admission(admission, who, model)
    assert error.retry_after == pytest.approx(0.5)
    assert memo.refused(who, "m", None) is not None
    clock.now += 0.5 - 1e-4  # just before the bucket has room for one request
    found = memo.refused(who, "m", None)
    assert found is not None
    answer = found.error_now()
    assert (answer.kind, answer.message) == (error.kind, error.message)
    assert answer.retry_after == pytest.approx(1e-4)
    assert answer.details["limit"] == 1 and answer.details["remaining"] == 0
    limiter = copy.deepcopy(admission.limiter)  # the full path agrees
    assert not (await limiter.hit("tenant:t", 1, 0.5)).allowed
    clock.now += 1e-4  # the instant the limiter admits one again: the memo no longer refuses
    assert memo.refused(who, "m", None) is None
    assert len(memo) == 0
    assert await admission.admit(who, model) is not None
    assert recorder.refusals == [("t", "tenant_rate_limit")] * 3


async def test_a_note_lasts_at_most_max_ttl() -> None:
    clock = Clock()
    admission, memo, _ = world(clock)  # max_ttl_s: 1 s
    who, model = principal(requests_per_second=0.01, burst=1), manifest()
    await admission.admit(who, model)
    error = await refused_by_admission(admission, who, model)
    assert error.retry_after and error.retry_after > 90
    clock.now += 0.999
    found = memo.refused(who, "m", None)
    assert found is not None
    assert found.error_now().retry_after == pytest.approx(error.retry_after - 0.999)
    clock.now += 0.001
    assert memo.refused(who, "m", None) is None
    # the full path refuses, and notes it again
    await refused_by_admission(admission, who, model)
    assert memo.refused(who, "m", None) is not None


async def test_keys_tenants_and_models_are_noted_apart() -> None:
    clock = Clock()
    admission, memo, recorder = world(clock, max_ttl_s=60.0)
    limited = manifest("limited", rps=0.01, burst=1)
    free = manifest("free")
    a = principal("t", "a")
    b = principal("t", "b")
    await admission.admit(a, limited, 1, ("limited", None))
    await refused_by_admission(admission, b, limited)  # the model's own limit, whoever calls
    assert memo.refused(b, "limited", None) is not None
    assert memo.refused(b, "limited", "2") is None  # another version may have another limit
    assert memo.refused(b, "free", None) is None  # another model
    assert memo.refused(a, "limited", None) is None  # another key: its own full path first
    assert await admission.admit(b, free, 1, ("free", None)) is None
    # a tenant's limit holds for every model of that key; not for another tenant's key
    slow = principal("s", "c", requests_per_second=0.01, burst=1)
    await admission.admit(slow, free)
    await refused_by_admission(admission, slow, free)
    assert memo.refused(slow, "limited", "7") is not None
    assert (
        memo.refused(principal("u", "c", requests_per_second=0.01, burst=1), "free", None) is None
    )
    assert recorder.refusals.count(("s", "tenant_rate_limit")) == 2


async def test_a_model_limit_is_not_noted_for_a_routed_request() -> None:
    clock = Clock()
    admission, memo, _ = world(clock)
    limited, who = manifest("limited", rps=0.01, burst=1), principal()
    await admission.admit(who, limited, 1, None)
    with pytest.raises(ModelgateError):
        await admission.admit(who, limited, 1, None)  # a deployment picked the version
    assert len(memo) == 0


async def test_a_plan_change_is_not_delayed() -> None:
    clock = Clock()
    admission, memo, _ = world(clock, max_ttl_s=60.0)
    who, model = principal(requests_per_second=0.01, burst=1), manifest()
    await admission.admit(who, model)
    await refused_by_admission(admission, who, model)
    upgraded = principal(requests_per_second=100.0, burst=100)
    assert memo.refused(upgraded, "m", None) is None
    assert len(memo) == 0  # the full path decides (the old plan's backlog may still refuse)
    await refused_by_admission(admission, who, model)  # noted again for the old plan
    keyed = Principal("t", "k", frozenset({"infer"}), who.plan, key_rate=(100.0, None))
    assert memo.refused(keyed, "m", None) is None  # the key got a limit of its own


async def test_only_an_exhausted_quota_is_noted() -> None:
    clock = Clock()
    admission, memo, recorder = world(clock, max_ttl_s=60.0)
    rows, model = principal(rows_per_day=3), manifest()
    await admission.admit(rows, model, 2)
    admission.release(rows)
    error = await refused_by_admission(admission, rows, model, 2)  # one row is still left
    assert error.details["remaining"] == 1
    assert memo.refused(rows, "m", None) is None
    await admission.admit(rows, model, 1)
    admission.release(rows)
    error = await refused_by_admission(admission, rows, model, 1)
    assert error.details["remaining"] == 0
    found = memo.refused(rows, "m", None)
    assert found is not None and found.reason == "quota_rows_per_day"
    answer = found.error_now()
    assert answer.message == error.message
    assert answer.details == error.details  # no time has passed
    assert recorder.refusals[-1] == ("t", "quota_rows_per_day")


async def test_a_quota_ending_within_a_second_is_not_noted() -> None:
    clock = Clock(now=12 * 3600 - 0.5)  # half a second before the UTC day ends
    admission, memo, _ = world(clock, max_ttl_s=60.0)
    who, model = principal("t", "k", requests_per_day=1), manifest()
    await admission.admit(who, model)
    admission.release(who)
    error = await refused_by_admission(admission, who, model)
    assert error.retry_after == 1.0  # the full path's floor, not the end of the period
    assert len(memo) == 0


async def test_a_degraded_limiter_is_not_believed() -> None:
    clock = Clock()
    admission, memo, _ = world(clock)

    class Degraded(MemoryRateLimiter):
        degraded = True

    admission.limiter = Degraded(clock_ns=clock.ns)
    who, model = principal(requests_per_second=0.01, burst=1), manifest()
    await admission.admit(who, model)
    await refused_by_admission(admission, who, model)
    assert len(memo) == 0


async def test_the_memo_is_bounded_and_forgets_the_oldest() -> None:
    clock = Clock()
    admission, memo, _ = world(clock, max_entries=2)
    model = manifest()
    callers = [principal(f"t{i}", requests_per_second=0.01, burst=1) for i in range(3)]
    for who in callers:
        await admission.admit(who, model)
        await refused_by_admission(admission, who, model)
    assert len(memo) == 2
    assert memo.refused(callers[0], "m", None) is None
    assert all(memo.refused(who, "m", None) is not None for who in callers[1:])


async def test_a_keys_429_lines_at_most_once_a_second_with_the_count_suppressed() -> None:
    clock = Clock()
    admission, memo, recorder = world(clock)
    who, model = principal(requests_per_second=0.01, burst=1), manifest()
    assert memo.line(who) is None  # a key never noted: its lines are written as any
    await admission.admit(who, model)
    await refused_by_admission(admission, who, model)
    lines = [memo.line(who)]  # the full path's refusal: written
    for _ in range(5):
        clock.now += 0.3
        if memo.refused(who, "m", None) is None:  # past 1 s: the full path notes it again
            await refused_by_admission(admission, who, model)
        lines.append(memo.line(who))
    # -1: not written; 3: the line 1.2 s after the first says 3 were not written
    assert lines == [0, -1, -1, -1, 3, -1]
    assert len(recorder.refusals) == 6  # every refusal is counted, the memo's too
    assert memo.line(principal("t", "other")) is None


def test_a_429_is_no_abuse_strike_so_a_memo_refusal_need_not_count_one() -> None:
    """REST answers a memo refusal without the error path's ``penalize``: as today, where
    a rate-limited request counts no strike against its key."""
    assert ErrorKind.RATE_LIMITED not in COUNTED


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        RefusalMemo(max_entries=0)


# -- the property: the memo never refuses what the full path would admit ------------------

_STEP = st.tuples(
    st.sampled_from([0.0, 1e-9, 1e-4, 0.01, 0.1, 0.2499, 0.25, 0.2501, 0.5, 1.0, 3.0]),
    st.integers(0, 2),  # caller
    st.sampled_from(["free", "limited"]),
    st.integers(1, 3),  # rows
)

_CALLERS = [
    principal("a", "k1", requests_per_second=4.0, burst=2, rows_per_day=7),
    principal("a", "k2", requests_per_second=4.0, burst=2, rows_per_day=7),
    Principal("b", "k3", frozenset({"infer"}), Plan("q", requests_per_day=6), key_rate=(2.0, 1)),
]
_MODELS = {"free": manifest("free"), "limited": manifest("limited", rps=3.0, burst=2)}


def _full_path(admission: Admission, clock: Clock) -> Admission:
    """An admission without a memo over a copy of ``admission``'s counters, now."""
    quotas = admission.quotas
    assert quotas is not None
    return Admission(
        copy.deepcopy(admission.limiter),
        quotas=Quotas(copy.deepcopy(quotas.counter), now=clock.utc),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=60))
def test_the_memo_never_refuses_a_request_the_full_path_would_admit(
    steps: list[tuple[float, int, str, int]],
) -> None:
    async def run() -> None:
        clock = Clock()
        admission, memo, _ = world(clock, max_ttl_s=10.0)
        for dt, caller, name, rows in steps:
            clock.now += dt
            who, model = _CALLERS[caller], _MODELS[name]
            if memo.refused(who, name, None) is not None:
                full = _full_path(admission, clock)
                with pytest.raises(ModelgateError) as info:
                    await full.admit(who, model, rows, (name, None))
                assert info.value.kind is ErrorKind.RATE_LIMITED
                continue
            try:
                await admission.admit(who, model, rows, (name, None))
            except ModelgateError as exc:
                kind = exc.kind
            else:
                kind = None
                admission.release(who)
            assert kind in (None, ErrorKind.RATE_LIMITED)

    asyncio.run(run())


@dataclass
class UsageRows:
    rows: list[dict[str, object]] = field(default_factory=list)

    def record(
        self, tenant_id: str, key_id: str | None, model: str, version: str | None, **kw: object
    ) -> None:
        self.rows.append(
            {"tenant": tenant_id, "key": key_id, "model": model, "version": version, **kw}
        )


async def test_a_memo_refusal_is_metered_as_the_full_path_meters_a_refusal() -> None:
    """Usage reports count every request: a refusal answered from the memo is one usage
    record, like the full path's, under the version and hardware that would have answered."""
    clock = Clock()
    usage = UsageRows()
    admission, memo, _ = world(clock, max_ttl_s=60.0, usage=usage)
    who, model = principal(requests_per_second=1.0, burst=1), manifest()
    await admission.admit(who, model, 1, ("m", None), served=("2", "cpu"))
    admission.release(who)
    with pytest.raises(ModelgateError):
        await admission.admit(who, model, 1, ("m", None), served=("2", "cpu"))
    for _ in range(3):
        assert memo.refused(who, "m", None) is not None
    assert usage.rows == 3 * [
        {
            "tenant": "t",
            "key": "k",
            "model": "m",
            "version": "2",
            "hardware": "cpu",
            "status": "rate_limited",
            "cache_hit": False,
            "rows": 0,
            "tokens": 0,
            "latency_ms": 0.0,
            "compute_ms": 0.0,
        }
    ]
