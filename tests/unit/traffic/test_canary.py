"""Canary gates and the decisions the deployment service takes on them, with an injected
clock, in-memory stores and no server."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.access.audit import verify_chain
from modelgate.core.access.identity import Plan, Principal, Scope
from modelgate.core.traffic.canary import StepWindow, VerdictKind, judge, merge
from modelgate.core.traffic.deployments import Canary, CanaryGate, Deployment, Shadow, Variant
from modelgate.core.traffic.rollout import AUTOMATIC_ACTOR, DeploymentService
from modelgate.core.traffic.routing import DeploymentRouter
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.audit import MemoryAuditLog
from modelgate.storage.memory.deployments import MemoryDeploymentStore

GATE = CanaryGate(min_requests=10, max_error_rate_increase=0.05, max_p95_ratio=1.5, p95_slack_ms=2)
OPERATOR = Principal("ten_ops", "key_ops", frozenset({Scope.TENANTS_ADMIN.value}), Plan("p"))
READER = Principal("ten_1", "key_1", frozenset({"infer", "models:read"}), Plan("p"))


def window(
    base: tuple[int, int, float] = (0, 0, 0.01), cand: tuple[int, int, float] = (0, 0, 0.01)
) -> StepWindow:
    """(requests, errors, latency seconds) of the baseline and the candidate."""
    found = StepWindow.empty()
    for target, (requests, errors, seconds) in ((found.baseline, base), (found.candidate, cand)):
        for i in range(requests):
            target.add("internal" if i < errors else "ok", seconds)
    return found


def test_a_failing_candidate_is_rolled_back_before_the_step_ends() -> None:
    verdict = judge(window((40, 0, 0.01), (10, 3, 0.01)), GATE, step_over=False)
    assert verdict.kind is VerdictKind.ROLLBACK
    assert "error rate 30.0%" in verdict.reason


def test_a_slow_candidate_is_rolled_back_on_its_p95() -> None:
    verdict = judge(window((40, 0, 0.010), (20, 0, 0.030)), GATE, step_over=True)
    assert verdict.kind is VerdictKind.ROLLBACK
    assert "p95 latency 30.0 ms exceeds 17.0 ms" in verdict.reason


def test_a_candidate_within_the_margins_advances_once_the_step_is_over() -> None:
    good = window((40, 1, 0.010), (20, 1, 0.014))
    assert judge(good, GATE, step_over=False).kind is VerdictKind.HOLD
    assert judge(good, GATE, step_over=True).kind is VerdictKind.ADVANCE


def test_too_few_requests_hold_whatever_they_show() -> None:
    assert judge(window((40, 0, 0.01), (9, 9, 1.0)), GATE, True).kind is VerdictKind.HOLD
    verdict = judge(window((9, 0, 0.01), (40, 0, 0.01)), GATE, True)
    assert verdict.kind is VerdictKind.HOLD
    assert "waiting for 10 requests" in verdict.reason


def test_client_errors_do_not_count_against_a_version() -> None:
    found = window((20, 0, 0.01), (0, 0, 0.01))
    for _ in range(20):
        found.candidate.add("invalid_argument", 0.01)
    assert found.candidate.error_rate == 0
    assert judge(found, GATE, True).kind is VerdictKind.ADVANCE


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def versions(model: str) -> set[int]:
    if model != "m":
        raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{model}'")
    return {1, 2, 3}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(clock: Clock) -> DeploymentService:
    return DeploymentService(
        MemoryDeploymentStore(), MemoryAuditLog(), DeploymentRouter(), versions, now=clock
    )


def canary_spec(steps: tuple[int, ...] = (10, 50, 100)) -> Deployment:
    return Deployment(
        model="m",
        default_version=1,
        canary=Canary(version=2, steps=steps, step_seconds=60, gate=GATE),
    )


def feed(service: DeploymentService, base: int, cand: int, cand_status: str = "ok") -> None:
    found = service.router.window("m")
    assert found is not None
    for _ in range(base):
        found.baseline.add("ok", 0.01)
    for _ in range(cand):
        found.candidate.add(cand_status, 0.01)


async def test_a_canary_steps_up_by_schedule_then_is_promoted(
    service: DeploymentService, clock: Clock
) -> None:
    await service.put(OPERATOR, canary_spec())
    assert service.router.deployment("m").canary.percent == 10  # type: ignore[union-attr]
    feed(service, 30, 30)
    await service.evaluate()
    assert service.router.deployment("m").canary.step == 0  # type: ignore[union-attr]
    clock.now += timedelta(seconds=61)
    await service.evaluate()
    stepped = service.router.deployment("m")
    assert stepped is not None and stepped.canary is not None
    assert (stepped.canary.step, stepped.canary.percent, stepped.revision) == (1, 50, 2)
    assert stepped.canary.step_started_at == clock.now
    clock.now += timedelta(seconds=61)
    await service.evaluate()  # the new step's window is empty: it waits for requests
    assert service.router.deployment("m").revision == 2  # type: ignore[union-attr]
    feed(service, 20, 20)
    await service.evaluate()
    promoted = await service.store.get("m")
    assert promoted is not None
    assert (promoted.default_version, promoted.canary, promoted.revision) == (2, None, 3)
    assert "promoted version 2" in promoted.note
    records = await service.audit.list(0, 100)
    assert [r.action for r in records] == [
        "deployment.set",
        "deployment.canary_step",
        "deployment.promote",
    ]
    assert records[2].actor == AUTOMATIC_ACTOR
    assert records[2].after["evidence"]["canary_window"]["canary"]["requests"] == 20  # type: ignore[index]
    assert verify_chain(records).ok


async def test_a_failing_canary_is_rolled_back_and_the_audit_trail_says_why(
    service: DeploymentService,
) -> None:
    await service.put(OPERATOR, canary_spec())
    feed(service, 30, 10, cand_status="internal")
    await service.evaluate()
    rolled = await service.store.get("m")
    assert rolled is not None
    assert (rolled.default_version, rolled.canary) == (1, None)
    assert rolled.note.startswith("rolled back version 2 at step 1 (10%): error rate 100.0%")
    last = (await service.audit.list(0, 100))[-1]
    assert (last.action, last.actor, last.target) == (
        "deployment.rollback",
        AUTOMATIC_ACTOR,
        "deployment:m",
    )


async def test_the_gate_state_is_the_verdict_were_the_step_over_now(
    service: DeploymentService, clock: Clock
) -> None:
    assert service.gate("m") is None  # no deployment, then no canary
    await service.put(OPERATOR, Deployment(model="m", default_version=1))
    assert service.gate("m") is None
    await service.put(OPERATOR, canary_spec())
    waiting = service.gate("m")
    assert waiting is not None
    assert (waiting["state"], waiting["step_over"], waiting["window"]) == (
        "waiting",
        False,
        "replica",
    )
    assert waiting["reason"].startswith(f"waiting for {GATE.min_requests} requests")
    feed(service, 30, 30)
    assert service.gate("m")["state"] == "passing"  # type: ignore[index]
    assert service.gate("m")["step_over"] is False  # type: ignore[index]
    clock.now += timedelta(seconds=61)
    assert service.gate("m")["step_over"] is True  # type: ignore[index]
    feed(service, 0, 30, cand_status="internal")  # the candidate's error rate: 50%
    failing = service.gate("m")
    assert failing is not None and failing["state"] == "failing"
    assert failing["reason"].startswith("error rate 50.0%")
    await service.evaluate()  # and the server's own judgement agrees: it rolls back
    assert service.gate("m") is None and (await service.store.get("m")).canary is None  # type: ignore[union-attr]


async def test_of_two_replicas_deciding_at_once_one_decision_is_taken(clock: Clock) -> None:
    store, audit = MemoryDeploymentStore(), MemoryAuditLog()
    a, b = (
        DeploymentService(store, audit, DeploymentRouter(), versions, now=clock) for _ in range(2)
    )
    await a.put(OPERATOR, canary_spec())
    await b.refresh()
    feed(a, 30, 10, cand_status="internal")  # a sees failures: roll back
    feed(b, 30, 30)  # b sees a healthy canary whose step is over: advance
    clock.now += timedelta(seconds=61)
    await a.evaluate()
    await b.evaluate()  # lost the race: no write, no audit record
    stored = await store.get("m")
    assert stored is not None and stored.canary is None and stored.revision == 2
    assert [r.action for r in await audit.list(0, 100)] == ["deployment.set", "deployment.rollback"]
    await b.refresh()
    assert b.router.deployment("m") == stored


async def test_manual_promote_and_rollback(service: DeploymentService) -> None:
    await service.put(OPERATOR, canary_spec())
    promoted = await service.promote(OPERATOR, "m")
    assert (promoted.default_version, promoted.canary) == (2, None)
    with pytest.raises(ModelgateError) as nothing:
        await service.rollback(OPERATOR, "m")
    assert nothing.value.kind is ErrorKind.FAILED_PRECONDITION
    split = Deployment(model="m", default_version=2, split=(Variant(2, 80), Variant(3, 20)))
    await service.put(OPERATOR, split)
    with pytest.raises(ModelgateError, match="name the version"):
        await service.promote(OPERATOR, "m")
    rolled = await service.rollback(OPERATOR, "m")
    assert (rolled.default_version, rolled.split, rolled.note) == (
        2,
        (),
        "rolled back the split (manual)",
    )
    pinned = await service.promote(OPERATOR, "m", 3)
    assert pinned.weights() == ((3, 100, "default"),)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (Deployment(model="m", default_version=9), "default_version 9 is not a version"),
        (
            Deployment(model="m", default_version=1, split=(Variant(1, 50), Variant(2, 40))),
            "sum to 100 (they sum to 90)",
        ),
        (canary_spec((50, 25)), "steps must increase"),
        (canary_spec((100,)), "at least one step below 100"),
        (canary_spec((0, 50)), "percentages from 1 to 100"),
        (
            Deployment(model="m", default_version=1, shadow=Shadow(1)),
            "shadow version 1 already serves traffic",
        ),
    ],
)
async def test_bad_deployments_are_refused_with_a_reason(
    service: DeploymentService, spec: Deployment, message: str
) -> None:
    with pytest.raises(ModelgateError, match=re.escape(message)) as refused:
        await service.put(OPERATOR, spec)
    assert refused.value.kind is ErrorKind.INVALID_ARGUMENT
    assert await service.store.get("m") is None


async def test_only_operators_change_deployments(service: DeploymentService) -> None:
    with pytest.raises(ModelgateError) as denied:
        await service.put(READER, canary_spec())
    assert denied.value.kind is ErrorKind.PERMISSION_DENIED
    with pytest.raises(ModelgateError) as unknown:
        await service.put(OPERATOR, Deployment(model="nope", default_version=1))
    assert unknown.value.kind is ErrorKind.NOT_FOUND


# -- windows shared between replicas ----------------------------------------------------------
class SharedWindows:
    """What Redis does for CanaryWindows (tests/contract/test_canary_windows.py runs the
    real one), in a dictionary: the rollout logic under test is the replicas' judging."""

    def __init__(self) -> None:
        self.steps: dict[tuple[str, int], dict[str, dict[str, object]]] = {}
        self.down = False

    async def exchange(
        self, model: str, revision: int, replica: str, snapshot: dict[str, object], ttl_s: float
    ) -> list[dict[str, object]]:
        if self.down:
            raise ModelgateError(ErrorKind.UNAVAILABLE, "unreachable")
        step = self.steps.setdefault((model, revision), {})
        step[replica] = snapshot
        return list(step.values())

    async def close(self) -> None:
        return None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-4, 30.0), min_size=1, max_size=400))
def test_a_merged_p95_is_at_most_5_percent_above_the_exact_one(latencies: list[float]) -> None:
    found = StepWindow.empty()
    for seconds in latencies:
        found.candidate.add("ok", seconds)
    exact = found.candidate.p95_ms
    merged = merge([found.snapshot()]).candidate.p95_ms
    assert exact <= merged <= exact * 1.05 + 1e-9


def test_merging_sums_replicas_and_ignores_what_is_not_a_window() -> None:
    a = window(base=(40, 0, 0.010), cand=(20, 2, 0.020))
    b = window(base=(60, 3, 0.010), cand=(30, 1, 0.040))
    junk: list[object] = [{"baseline": {"requests": "x"}}, {"candidate": {"requests": -1}}, 7]
    merged = merge([a.snapshot(), b.snapshot(), *junk])  # type: ignore[list-item]
    assert (merged.baseline.requests, merged.baseline.errors) == (100, 3)
    assert (merged.candidate.requests, merged.candidate.errors) == (50, 3)
    assert 40.0 <= merged.candidate.p95_ms <= 42.0  # the slower replica's latencies


async def test_replicas_judge_the_cluster_window_no_one_of_them_has_enough_of(
    clock: Clock,
) -> None:
    """min_requests 10: each of two replicas sees 6 failing candidate requests (holds on
    its own); together they see 12, and the first to judge rolls back."""
    store, audit, shared = MemoryDeploymentStore(), MemoryAuditLog(), SharedWindows()
    a, b = (
        DeploymentService(
            store,
            audit,
            DeploymentRouter(),
            versions,
            now=clock,
            windows=shared,
            replica_id=name,
        )
        for name in ("a", "b")
    )
    await a.put(OPERATOR, canary_spec())
    await b.refresh()
    for replica in (a, b):
        feed(replica, 12, 6, cand_status="internal")
    alone = judge(a.router.window("m"), GATE, step_over=False)  # type: ignore[arg-type]
    assert alone.kind is VerdictKind.HOLD
    await a.evaluate()  # a publishes its window and sees only its own: holds
    assert a.gate("m")["window"] == "cluster"  # type: ignore[index]
    assert (await store.get("m")).canary is not None  # type: ignore[union-attr]
    await b.evaluate()  # b sees both: 12 failing requests, rolls back
    rolled = await store.get("m")
    assert rolled is not None and rolled.canary is None
    last = (await audit.list(0, 100))[-1]
    assert last.action == "deployment.rollback"
    assert last.after["evidence"]["cluster_window"]["canary"]["requests"] == 12  # type: ignore[index]
    assert last.after["evidence"]["cluster_window"]["replicas"] == 2  # type: ignore[index]


async def test_with_the_shared_store_down_a_replica_judges_its_own_window(clock: Clock) -> None:
    shared = SharedWindows()
    shared.down = True
    service = DeploymentService(
        MemoryDeploymentStore(), MemoryAuditLog(), DeploymentRouter(), versions, now=clock
    )
    service.windows = shared
    await service.put(OPERATOR, canary_spec())
    feed(service, 30, 10, cand_status="internal")
    await service.evaluate()
    rolled = await service.store.get("m")
    assert rolled is not None and rolled.canary is None
    assert service.status("m")["cluster_window"] is None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
#: shaped like a version's window, with any values: what the parser has to sort out
_WINDOWISH = st.fixed_dictionaries(
    {
        "requests": st.integers(-3, 10**6) | _JSON,
        "errors": st.integers(-3, 10**6) | _JSON,
        "buckets": st.dictionaries(
            st.text("0123456789", min_size=1, max_size=4) | st.text(max_size=3),
            st.integers(-3, 10**6) | _JSON,
            max_size=6,
        )
        | _JSON,
    }
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        _JSON | st.fixed_dictionaries({"baseline": _WINDOWISH | _JSON, "candidate": _WINDOWISH}),
        max_size=4,
    )
)
def test_merging_whatever_redis_holds_never_raises(snapshots: list[object]) -> None:
    """Another replica's field in Redis could hold anything (an older version's format, a
    hand edit): merging skips what is not a window and never fails the gate loop."""
    merged = merge(snapshots)  # type: ignore[arg-type]
    for side in (merged.baseline, merged.candidate):
        assert side.requests >= side.errors >= 0
        assert 0.0 <= side.error_rate <= 1.0
        assert side.p95_ms >= 0.0
        side.summary()
