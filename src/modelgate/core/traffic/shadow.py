"""Shadow traffic: a copy of a request goes to a candidate version, off the request path.

:meth:`ShadowRunner.mirror` is called after the primary answer is built; it only starts a
background task (or counts the copy as dropped when ``max_pending`` copies are already
running), so a shadow never delays or fails the primary answer. The copy calls the shadow
version's runtime directly: no admission, rate limits, quotas or metering, so it costs the
caller nothing, and it is not counted in the version's request statistics either.

The answers are compared output by output:

- integer and boolean outputs (predicted labels): a row agrees when all its values are
  equal; the agreement rate is agreed rows / compared rows;
- floating-point outputs (scores): the mean absolute difference over all elements.

Outputs missing from either answer, or of different shapes, are not compared. The sums are
kept per (model, primary version, shadow version) on this replica (:meth:`report`) and
reported to the :class:`~modelgate.core.traffic.ports.DeploymentObserver` (Prometheus counters).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.core.serving.ports import Arrays, Timing
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.traffic.ports import DeploymentObserver
from modelgate.core.traffic.routing import Choice
from modelgate.errors import ModelgateError

__all__ = ["ShadowRunner", "ShadowStats", "compare_outputs"]

log = logging.getLogger("modelgate.shadow")

_SAMPLES = 2000


@dataclass(slots=True)
class OutputComparison:
    """``kind`` "labels": ``count`` rows, ``total`` agreeing; "scores": ``count`` elements,
    ``total`` the sum of absolute differences."""

    kind: str
    count: int = 0
    total: float = 0.0


@dataclass
class ShadowStats:
    """The comparison of one primary version with one shadow version, on this replica."""

    copies: int = 0
    errors: int = 0
    dropped: int = 0
    outputs: dict[str, OutputComparison] = field(default_factory=dict)
    shadow_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    primary_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))

    def as_dict(self) -> dict[str, Any]:
        outputs: dict[str, dict[str, float | int | None]] = {}
        for name, c in sorted(self.outputs.items()):
            if c.kind == "labels":
                rate = c.total / c.count if c.count else None
                outputs[name] = {"rows": c.count, "agreement": rate}
            else:
                mean = c.total / c.count if c.count else None
                outputs[name] = {"elements": c.count, "mean_abs_diff": mean}
        return {
            "copies": self.copies,
            "errors": self.errors,
            "dropped": self.dropped,
            "error_rate": self.errors / self.copies if self.copies else 0.0,
            "shadow_p95_ms": _p95_ms(self.shadow_seconds),
            "primary_p95_ms": _p95_ms(self.primary_seconds),
            "outputs": outputs,
        }


def _p95_ms(samples: deque[float]) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)] * 1000, 3)


def compare_outputs(primary: Arrays, shadow: Arrays) -> dict[str, OutputComparison]:
    """Each comparable output's agreement (labels) or absolute differences (scores)."""
    found: dict[str, OutputComparison] = {}
    for name, a in primary.items():
        b = shadow.get(name)
        if b is None or a.shape != b.shape or a.size == 0:
            continue
        if a.dtype.kind in "iub" and b.dtype.kind in "iub":
            rows = a.reshape(a.shape[0], -1) == b.reshape(b.shape[0], -1) if a.ndim else a == b
            agreed = rows.all(axis=1) if a.ndim else rows
            found[name] = OutputComparison("labels", int(np.size(agreed)), float(np.sum(agreed)))
        elif a.dtype.kind == "f" and b.dtype.kind in "fiu":
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            finite = diff[np.isfinite(diff)]
            found[name] = OutputComparison("scores", int(finite.size), float(finite.sum()))
    return found


class ShadowRunner:
    """Runs shadow copies in background tasks, at most ``max_pending`` at a time."""

    def __init__(
        self,
        registry: ModelRegistry,
        observer: DeploymentObserver | None = None,
        *,
        max_pending: int = 64,
        timeout_s: float = 30.0,
    ) -> None:
        self.registry = registry
        self.observer = observer
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats: dict[tuple[str, str, str], ShadowStats] = {}

    def mirror(
        self, choice: Choice, inputs: Arrays, primary: Arrays, primary_seconds: float
    ) -> None:
        """Start the copy of one answered request (``choice.shadow`` must be set)."""
        shadow = choice.shadow
        assert shadow is not None
        key = (choice.model, choice.version, shadow)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = ShadowStats()
        if len(self._tasks) >= self.max_pending:
            stats.dropped += 1
            if self.observer is not None:
                self.observer.shadowed(
                    choice.model, choice.version, shadow, "dropped", 0.0, 0, 0, 0.0, 0
                )
            return
        stats.primary_seconds.append(primary_seconds)
        task = asyncio.get_running_loop().create_task(
            self._run(choice.model, choice.version, shadow, inputs, primary, stats)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        model: str,
        version: str,
        shadow: str,
        inputs: Arrays,
        primary: Arrays,
        stats: ShadowStats,
    ) -> None:
        start = time.perf_counter()
        outcome = "error"
        compared: dict[str, OutputComparison] = {}
        try:
            loaded = self.registry.get(model, shadow) or await self.registry.acquire(model, shadow)
            loaded.enter()  # a reload waits for the copy, as for any request
            try:
                # a copy nobody waits for: spot capacity first (core/gateway/capacity.py)
                timing = Timing(deadline=time.monotonic() + self.timeout_s, critical=False)
                answer = await loaded.runtime.infer(inputs, timing)
            finally:
                loaded.leave()
            compared = compare_outputs(primary, answer)
            outcome = "ok"
        except ModelgateError as exc:
            log.debug("shadow copy to %s v%s failed: %s", model, shadow, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:  # a shadow's failure is recorded, never raised: nobody waits for it
            log.exception("shadow copy to %s v%s failed", model, shadow)
        seconds = time.perf_counter() - start
        stats.copies += 1
        if outcome == "ok":
            stats.shadow_seconds.append(seconds)
            for name, found in compared.items():
                total = stats.outputs.setdefault(name, OutputComparison(found.kind))
                total.count += found.count
                total.total += found.total
        else:
            stats.errors += 1
        if self.observer is not None:
            labels = [c for c in compared.values() if c.kind == "labels"]
            scores = [c for c in compared.values() if c.kind == "scores"]
            self.observer.shadowed(
                model,
                version,
                shadow,
                outcome,
                seconds,
                sum(c.count for c in labels),
                int(sum(c.total for c in labels)),
                sum(c.total for c in scores),
                sum(c.count for c in scores),
            )

    def report(self, model: str) -> list[dict[str, Any]]:
        """This replica's comparisons for ``model``, per (primary, shadow) version pair."""
        return [
            {"version": version, "shadow_version": shadow, **stats.as_dict()}
            for (name, version, shadow), stats in sorted(self._stats.items())
            if name == model
        ]

    def reset(self, model: str) -> None:
        for key in [k for k in self._stats if k[0] == model]:
            del self._stats[key]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
