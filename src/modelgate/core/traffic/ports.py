"""The ports of traffic, as Protocols: where deployments live, their metrics sink, and
where replicas share their canary windows. Adapters implement them.

Contracts are stated on each port; the implementations live outside ``core/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from modelgate.core.traffic.deployments import Deployment

__all__ = [
    "CanaryFairness",
    "CanaryWindows",
    "DeploymentObserver",
    "DeploymentStore",
    "FairnessCheck",
]


class DeploymentStore(Protocol):
    """Where each model's deployment lives (memory, SQLite, PostgreSQL), shared by the
    replicas that read it.

    Contract:

    - ``get`` answers the model's deployment, or None; ``list`` every deployment, by model;
    - ``put`` writes ``deployment`` only over the revision it was read at: with
      ``expected_revision`` 0 only when the model has none yet, otherwise only when the
      stored revision is ``expected_revision``; ``deployment.revision`` must be
      ``expected_revision + 1``. It answers False (and writes nothing) when another writer
      got there first: compare and set, atomic across processes. The stored deployment
      comes back equal (``updated_at`` to the microsecond);
    - ``delete`` removes the model's deployment; False when there was none.

    Text a column cannot hold (a model name over 256 characters, NUL) is INVALID_ARGUMENT.
    """

    async def get(self, model: str) -> Deployment | None: ...

    async def list(self) -> list[Deployment]: ...

    async def put(self, deployment: Deployment, expected_revision: int) -> bool: ...

    async def delete(self, model: str) -> bool: ...


class DeploymentObserver(Protocol):
    """Metrics of deployments (Prometheus in production); must not block or do I/O.

    - ``deployment``: the model's serving arms changed: (version, percent, role) each, and
      its stage (``stable``, ``split``, ``canary-2of3``); ``arms`` empty: no deployment;
    - ``shadowed``: one shadow copy ended (``outcome``: ``ok``, ``error``, ``dropped``) with
      the rows compared on label outputs and how many agreed, and the sum of absolute
      differences over ``elements`` score elements.
    """

    def deployment(self, model: str, arms: Sequence[tuple[int, int, str]], stage: str) -> None: ...

    def shadowed(
        self,
        model: str,
        version: str,
        shadow_version: str,
        outcome: str,
        seconds: float,
        rows: int,
        agreed: int,
        abs_diff: float,
        elements: int,
    ) -> None: ...


class CanaryWindows(Protocol):
    """Where replicas share their windows (Redis in ``storage/redis/canary_windows.py``).

    ``exchange`` stores ``snapshot`` as ``replica``'s window of the model's step
    (``revision``), keeps the step's windows ``ttl_s`` after the last exchange, and
    answers every replica's snapshot (this one's included); UNAVAILABLE when the store
    cannot be reached."""

    async def exchange(
        self, model: str, revision: int, replica: str, snapshot: dict[str, Any], ttl_s: float
    ) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FairnessCheck:
    """A canary's fairness gates on its live predictions: ``pass``, ``fail`` (a limit is
    broken: roll back) or ``insufficient`` (too few labelled rows to judge: hold), why,
    and the details as plain JSON (broken limits, groups too small to judge)."""

    state: Literal["pass", "fail", "insufficient"]
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


class CanaryFairness(Protocol):
    """Judges a canary version's fairness gates (``modelgate.fairness.canary_gate``).

    ``check`` audits the predictions ``version`` of ``model`` made from ``since`` until
    ``now`` that have feedback labels, against the model's ``fairness.gates``, and answers
    None when the model sets no gates. The work is bounded (one query of at most the
    audit's row limit); callers still ask it at most once per their own interval. A store
    that cannot be read is a ModelgateError."""

    async def check(
        self, model: str, version: int, since: datetime, now: datetime
    ) -> FairnessCheck | None: ...
