"""Canary gates: is the candidate doing as well as the version it would replace?

Each replica keeps, per canary step, the outcomes of the requests it routed to the
baseline and to the candidate (:class:`StepWindow`; a counter and a bounded list of
latencies per version, appended on the request path). :func:`judge` compares the two and
answers hold, advance or roll back; :class:`~modelgate.core.rollout.DeploymentService`
acts on the answer. It is a pure function of the two windows, the gate and whether the
step's time is up, so the tests drive it with made-up numbers and no clock.

Only failures the server is responsible for count as errors (``internal``,
``unavailable``, ``overloaded``, ``deadline_exceeded``): a client's bad input or spent quota
says nothing about a version.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from modelgate.core.deployments import CanaryGate

__all__ = ["SERVER_ERRORS", "StepWindow", "Verdict", "VerdictKind", "VersionWindow", "judge"]

#: outcomes that count against a version
SERVER_ERRORS = frozenset({"internal", "unavailable", "overloaded", "deadline_exceeded"})
#: latencies kept per version and step (the p95 of the newest ones)
MAX_SAMPLES = 5000


class VersionWindow:
    """One version's requests in one step: counts, and the newest latencies."""

    __slots__ = ("errors", "latencies", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=MAX_SAMPLES)

    def add(self, status: str, seconds: float) -> None:
        self.requests += 1
        if status in SERVER_ERRORS:
            self.errors += 1
        self.latencies.append(seconds)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_ms(self) -> float:
        """The 95th percentile latency in milliseconds (nearest rank); 0 with no requests."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)] * 1000

    def summary(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p95_ms": round(self.p95_ms, 3),
        }


@dataclass(eq=False)
class StepWindow:
    """The baseline's and the candidate's windows of one canary step on this replica."""

    baseline: VersionWindow
    candidate: VersionWindow

    @classmethod
    def empty(cls) -> StepWindow:
        return cls(VersionWindow(), VersionWindow())


class VerdictKind(enum.Enum):
    HOLD = "hold"
    ADVANCE = "advance"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    reason: str


def judge(window: StepWindow, gate: CanaryGate, step_over: bool) -> Verdict:
    """Roll back as soon as the candidate is worse by the gate's margins (with
    ``min_requests`` of its own); advance once the step is over and both versions have
    ``min_requests``; otherwise hold."""
    candidate, baseline = window.candidate, window.baseline
    enough_baseline = baseline.requests >= gate.min_requests
    if candidate.requests >= gate.min_requests:
        # without enough baseline traffic to compare with, the candidate's errors are
        # measured against none
        allowed = (baseline.error_rate if enough_baseline else 0.0) + gate.max_error_rate_increase
        if candidate.error_rate > allowed:
            return Verdict(
                VerdictKind.ROLLBACK,
                f"error rate {candidate.error_rate:.1%} over {candidate.requests} requests "
                f"exceeds the baseline's {baseline.error_rate:.1%} by more than "
                f"{gate.max_error_rate_increase:.1%}",
            )
        if enough_baseline:
            limit = baseline.p95_ms * gate.max_p95_ratio + gate.p95_slack_ms
            if candidate.p95_ms > limit:
                return Verdict(
                    VerdictKind.ROLLBACK,
                    f"p95 latency {candidate.p95_ms:.1f} ms exceeds {limit:.1f} ms "
                    f"(baseline p95 {baseline.p95_ms:.1f} ms x {gate.max_p95_ratio:g} "
                    f"+ {gate.p95_slack_ms:g} ms)",
                )
    if not step_over:
        return Verdict(VerdictKind.HOLD, "the step's time is not up")
    if candidate.requests < gate.min_requests or not enough_baseline:
        return Verdict(
            VerdictKind.HOLD,
            f"waiting for {gate.min_requests} requests on each version "
            f"(candidate {candidate.requests}, baseline {baseline.requests})",
        )
    return Verdict(
        VerdictKind.ADVANCE,
        f"candidate error rate {candidate.error_rate:.1%}, p95 {candidate.p95_ms:.1f} ms; "
        f"baseline {baseline.error_rate:.1%}, p95 {baseline.p95_ms:.1f} ms "
        f"({candidate.requests} and {baseline.requests} requests)",
    )
