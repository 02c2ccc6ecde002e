"""Canary gates: is the candidate doing as well as the version it would replace?

Each replica keeps, per canary step, the outcomes of the requests it routed to the
baseline and to the candidate (:class:`StepWindow`; a counter and a bounded list of
latencies per version, appended on the request path). :func:`judge` compares the two and
answers hold, advance or roll back; :class:`~modelgate.core.traffic.rollout.DeploymentService`
acts on the answer. It is a pure function of the two windows, the gate and whether the
step's time is up, so the tests drive it with made-up numbers and no clock.

Only failures the server is responsible for count as errors (``internal``,
``unavailable``, ``overloaded``, ``deadline_exceeded``): a client's bad input or spent quota
says nothing about a version.

Scaled out, replicas share their windows through a
:class:`~modelgate.core.traffic.ports.CanaryWindows` store (Redis): each publishes
:meth:`StepWindow.snapshot` (counts, and latencies as a histogram of 5%-wide buckets) and
judges the sum of every replica's (:func:`merge`), so a gate sees the whole
cluster's traffic. A merged p95 is the upper edge of its bucket: at most 5% above the
exact one, for both versions alike.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

from modelgate.core.traffic.deployments import CanaryGate

__all__ = [
    "SERVER_ERRORS",
    "ClusterWindow",
    "MergedWindow",
    "Outcomes",
    "StepWindow",
    "Verdict",
    "VerdictKind",
    "VersionWindow",
    "Windows",
    "judge",
    "merge",
]

#: outcomes that count against a version
SERVER_ERRORS = frozenset({"internal", "unavailable", "overloaded", "deadline_exceeded"})
#: latencies kept per version and step (the p95 of the newest ones)
MAX_SAMPLES = 5000
#: the latency histogram shared between replicas: bucket ``i`` holds latencies from
#: ``_BASE_S * _GROWTH**i`` up to the next edge (bucket 0 also holds anything shorter)
_BASE_S = 1e-5
_GROWTH = 1.05
_LOG_GROWTH = math.log(_GROWTH)
_MAX_BUCKET = 400  # about 3 minutes: anything longer shares the last bucket


def _bucket(seconds: float) -> int:
    if not seconds > _BASE_S:  # NaN too
        return 0
    return min(int(math.log(seconds / _BASE_S) / _LOG_GROWTH), _MAX_BUCKET)


def _p95_ms(buckets: Mapping[int, int]) -> float:
    """The upper edge, in milliseconds, of the bucket holding the 95th percentile."""
    total = sum(buckets.values())
    if not total:
        return 0.0
    rank = max(math.ceil(0.95 * total), 1)
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return _BASE_S * _GROWTH ** (index + 1) * 1000
    return 0.0  # unreachable: the counts add up to total


class Outcomes(Protocol):
    """What a gate reads of one version's requests in a step."""

    @property
    def requests(self) -> int: ...

    @property
    def error_rate(self) -> float: ...

    @property
    def p95_ms(self) -> float: ...


class Windows(Protocol):
    """The baseline's and the candidate's outcomes in a step: one replica's or merged."""

    @property
    def baseline(self) -> Outcomes: ...

    @property
    def candidate(self) -> Outcomes: ...


class _Counts:
    """What a version's window and a merged one answer alike, from ``requests``,
    ``errors`` and ``p95_ms``."""

    __slots__ = ()
    requests: int
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_ms(self) -> float:
        raise NotImplementedError

    def summary(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p95_ms": round(self.p95_ms, 3),
        }


class VersionWindow(_Counts):
    """One version's requests in one step: counts, and the newest latencies."""

    __slots__ = ("buckets", "errors", "latencies", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=MAX_SAMPLES)
        #: every latency of the step, as counts per histogram bucket (for other replicas)
        self.buckets: dict[int, int] = {}

    def add(self, status: str, seconds: float) -> None:
        self.requests += 1
        if status in SERVER_ERRORS:
            self.errors += 1
        self.latencies.append(seconds)
        index = _bucket(seconds)
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        buckets = {str(i): n for i, n in self.buckets.items()}
        return {"requests": self.requests, "errors": self.errors, "buckets": buckets}

    @property
    def p95_ms(self) -> float:
        """The 95th percentile latency in milliseconds (nearest rank); 0 with no requests."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)] * 1000


@dataclass(eq=False)
class StepWindow:
    """The baseline's and the candidate's windows of one canary step on this replica."""

    baseline: VersionWindow
    candidate: VersionWindow

    @classmethod
    def empty(cls) -> StepWindow:
        return cls(VersionWindow(), VersionWindow())

    def snapshot(self) -> dict[str, Any]:
        """This replica's window as plain data, for the shared
        :class:`~modelgate.core.traffic.ports.CanaryWindows`."""
        return {"baseline": self.baseline.snapshot(), "candidate": self.candidate.snapshot()}


class MergedWindow(_Counts):
    """One version's requests in a step on several replicas: summed counts, and a p95 read
    from the summed histogram."""

    __slots__ = ("buckets", "errors", "requests")

    def __init__(self, snapshots: Sequence[Mapping[str, Any]]) -> None:
        self.requests = 0
        self.errors = 0
        self.buckets: dict[int, int] = {}
        for snapshot in snapshots:
            requests, errors = snapshot.get("requests"), snapshot.get("errors")
            buckets = snapshot.get("buckets")
            if not (_count(requests) and _count(errors) and isinstance(buckets, dict)):
                continue  # not a window this version wrote: ignored
            counted: dict[int, int] = {}
            for key, value in buckets.items():
                if not (isinstance(key, str) and key.isdigit() and _count(value)):
                    break
                counted[min(int(key), _MAX_BUCKET)] = value
            else:
                self.requests += requests
                self.errors += min(errors, requests)
                for index, value in counted.items():
                    self.buckets[index] = self.buckets.get(index, 0) + value

    @property
    def p95_ms(self) -> float:
        return _p95_ms(self.buckets)


@dataclass(frozen=True, eq=False)
class ClusterWindow:
    """Every replica's window of one step, merged (:func:`merge`)."""

    baseline: MergedWindow
    candidate: MergedWindow
    replicas: int

    def summary(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "baseline": self.baseline.summary(),
            "canary": self.candidate.summary(),
        }


def merge(snapshots: Sequence[Mapping[str, Any]]) -> ClusterWindow:
    """The windows of several replicas (as :meth:`StepWindow.snapshot` made them) as one;
    a snapshot that is not one is ignored."""
    valid = [s for s in snapshots if isinstance(s, Mapping)]
    return ClusterWindow(
        MergedWindow([_part(s, "baseline") for s in valid]),
        MergedWindow([_part(s, "candidate") for s in valid]),
        replicas=len(valid),
    )


def _part(snapshot: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    part = snapshot.get(name)
    return part if isinstance(part, Mapping) else {}


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class VerdictKind(enum.Enum):
    HOLD = "hold"
    ADVANCE = "advance"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    reason: str


def judge(window: Windows, gate: CanaryGate, step_over: bool) -> Verdict:
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
