"""Fairness gates in canary rollouts: a broken gate rolls the canary back (audit trail and
gate state say why), too few labelled rows hold a canary whose step is over, a kept gate
lets it move on, the audit is asked at most once per interval, and a failed audit holds."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from modelgate.core.traffic.ports import FairnessCheck
from modelgate.core.traffic.rollout import AUTOMATIC_ACTOR, DeploymentService
from modelgate.core.traffic.routing import DeploymentRouter
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.audit import MemoryAuditLog
from modelgate.storage.memory.deployments import MemoryDeploymentStore
from tests.unit.traffic.test_canary import OPERATOR, Clock, canary_spec, feed, versions


class ScriptedFairness:
    """Answers the check it is given, and records what it was asked."""

    def __init__(self, check: FairnessCheck | None) -> None:
        self.check_answer: FairnessCheck | None = check
        self.fails = False
        self.breaks = False
        self.asked: list[tuple[str, int, datetime, datetime]] = []

    async def check(
        self, model: str, version: int, since: datetime, now: datetime
    ) -> FairnessCheck | None:
        self.asked.append((model, version, since, now))
        if self.fails:
            raise ModelgateError(ErrorKind.UNAVAILABLE, "the database is unreachable")
        if self.breaks:
            raise RuntimeError("a bug in the audit")
        return self.check_answer


BROKEN = FairnessCheck(
    "fail",
    "fairness gate broken: age_band: demographic_parity_difference 0.300 is above 0.1",
    {"breaches": [{"attribute": "age_band", "metric": "demographic_parity_difference"}]},
)
TOO_FEW = FairnessCheck(
    "insufficient",
    "fairness not judged yet: fewer than two groups with 30 labelled rows for age_band",
    {"small_groups": [{"attribute": "age_band", "group": "1", "count": 4}]},
)
KEPT = FairnessCheck("pass", "fairness gates kept on age_band (400 rows)", {})


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _service(clock: Clock, fairness: ScriptedFairness) -> DeploymentService:
    return DeploymentService(
        MemoryDeploymentStore(),
        MemoryAuditLog(),
        DeploymentRouter(),
        versions,
        now=clock,
        fairness=fairness,
        fairness_interval_s=30,
    )


async def test_a_broken_fairness_gate_rolls_the_canary_back(clock: Clock) -> None:
    fairness = ScriptedFairness(BROKEN)
    service = _service(clock, fairness)
    await service.put(OPERATOR, canary_spec())
    feed(service, 30, 30)  # latency and errors alike: only fairness fails it
    failing = service.gate("m")
    assert failing is not None and failing["fairness"] is None  # not checked yet
    await service.evaluate()
    rolled = await service.store.get("m")
    assert rolled is not None and (rolled.default_version, rolled.canary) == (1, None)
    assert "demographic_parity_difference 0.300 is above 0.1" in rolled.note
    last = (await service.audit.list(0, 100))[-1]
    assert (last.action, last.actor) == ("deployment.rollback", AUTOMATIC_ACTOR)
    assert last.after["evidence"]["fairness"]["state"] == "fail"  # type: ignore[index]
    # asked about the canary version, over the window since the canary began
    [(model, version, since, _)] = fairness.asked
    assert (model, version, since) == ("m", 2, datetime(2026, 3, 1, 12, 0, tzinfo=since.tzinfo))


async def test_too_few_labelled_rows_hold_the_canary_at_its_step(clock: Clock) -> None:
    fairness = ScriptedFairness(TOO_FEW)
    service = _service(clock, fairness)
    await service.put(OPERATOR, canary_spec())
    feed(service, 30, 30)
    clock.now += timedelta(seconds=61)
    await service.evaluate()
    held = service.router.deployment("m")
    assert held is not None and held.canary is not None and held.canary.step == 0
    gate = service.gate("m")
    assert gate is not None and gate["state"] == "waiting"
    assert gate["reason"].startswith("fairness not judged yet")
    assert gate["fairness"]["small_groups"] == [{"attribute": "age_band", "group": "1", "count": 4}]
    # enough feedback arrives: the next check (after the interval) lets it move on
    fairness.check_answer = KEPT
    await service.evaluate()
    assert service.router.deployment("m").canary.step == 0  # type: ignore[union-attr]
    assert len(fairness.asked) == 1  # within the interval: the last check stands
    clock.now += timedelta(seconds=31)
    await service.evaluate()
    stepped = service.router.deployment("m")
    assert stepped is not None and stepped.canary is not None and stepped.canary.step == 1
    assert stepped.note.endswith("fairness gates kept on age_band (400 rows)")
    # the window still starts when the canary began, not when the step did
    assert fairness.asked[-1][2] == fairness.asked[0][2]


async def test_a_model_without_gates_rolls_out_as_before(clock: Clock) -> None:
    fairness = ScriptedFairness(None)
    service = _service(clock, fairness)
    await service.put(OPERATOR, canary_spec((10, 100)))
    feed(service, 30, 30)
    clock.now += timedelta(seconds=61)
    await service.evaluate()
    promoted = await service.store.get("m")
    assert promoted is not None and (promoted.default_version, promoted.canary) == (2, None)


async def test_a_failed_audit_holds_and_says_so(clock: Clock) -> None:
    fairness = ScriptedFairness(KEPT)
    fairness.fails = True
    service = _service(clock, fairness)
    await service.put(OPERATOR, canary_spec())
    feed(service, 30, 30)
    clock.now += timedelta(seconds=61)
    await service.evaluate()
    assert service.router.deployment("m").canary.step == 0  # type: ignore[union-attr]
    gate = service.gate("m")
    assert gate is not None and gate["state"] == "waiting"
    assert "fairness audit failed: the database is unreachable" in gate["reason"]


async def test_an_unexpected_audit_error_holds_that_canary_only(clock: Clock) -> None:
    fairness = ScriptedFairness(KEPT)
    fairness.breaks = True
    service = _service(clock, fairness)
    await service.put(OPERATOR, canary_spec())
    feed(service, 30, 30)
    clock.now += timedelta(seconds=61)
    await service.evaluate()  # does not raise: the round goes on for other models
    assert service.router.deployment("m").canary.step == 0  # type: ignore[union-attr]
    assert "fairness audit failed" in service.gate("m")["reason"]  # type: ignore[index]
