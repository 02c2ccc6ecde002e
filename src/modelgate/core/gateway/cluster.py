"""How a gateway sends its nodes work: one inference at a time, to the node it chooses.

:class:`Cluster` routes by the gateway's node table
(:class:`~modelgate.core.gateway.node_table.NodeTable`: what the nodes announce, refreshed
from a :class:`~modelgate.core.gateway.ports.NodeDirectory`), keeps each node's breakers and
load count, and forwards one inference at a time through a
:class:`~modelgate.core.gateway.ports.NodeClient` (OIP gRPC):

- **Placement**: only nodes that announce the model and version, and are not draining.
- **Health**: a breaker per node and one per (node, model, version)
  (:mod:`modelgate.core.gateway.breaker`); an open breaker takes the target out of the choice.
- **Region** (a gateway with ``MODELGATE_REGION``): its own region's nodes first, another
  region's only when its own has no healthy node for the version
  (:mod:`modelgate.core.gateway.regions`); the answer names the region of the node that
  answered (``parameters.region``) whenever that node announced one.
- **Capacity class** (once a node of the table is spot): job items and other work that can
  wait go to spot nodes first, interactive requests to on-demand nodes until they are
  saturated (:mod:`modelgate.core.gateway.capacity`).
- **Hardware**: a model whose manifest prefers ``gpu`` goes to a GPU node when one is up,
  else to a CPU node (the answer says so: :attr:`Timing.hardware`).
- **Load**: the fewest outstanding requests from this gateway, ties broken at random.
- **Per-try timeout**: while another node could take a retry, an attempt gets half the
  time left, so a stalled node (not dead, not answering) leaves time to try another one.
- **Retries**: inference is idempotent, so a failure the node is to blame for (unreachable,
  5xx, timed out, overloaded, or the model missing after all) is retried on another node,
  after capped exponential backoff with full jitter, while the caller's deadline allows and
  within the retry budget (retries at most 20% of requests, :mod:`modelgate.core.gateway.retry`).
  A caller's error (bad input, unknown output) is answered at once. A call that died with
  its node (the connection reset, the stream removed) is such a failure too: the node may
  have run it, and running it again elsewhere is harmless. The caller's own cancellation
  is never retried, nor is anything once the caller's deadline has passed.
- **Whose call it is**: each attempt names the caller's tenant, fair-share weight and
  priority in its metadata, so that the node's batcher and fair shedding tell the tenants
  apart (:mod:`modelgate.core.gateway.tenant_metadata`).
- **Anomaly checks**: a call whose inputs the gateway checked for anomalies says so in its
  metadata (:mod:`modelgate.core.gateway.node_calls`), and the node does not check them again.
- **Cold starts**: a model no live node announces (its pool scaled to zero) waits a bounded
  time for a node to announce it (:mod:`modelgate.core.gateway.cold_start`). The gateway
  knows such a model, or such a version of a model other nodes serve, from the cluster's
  catalogue of models served recently, which the node table reads
  (:mod:`modelgate.core.gateway.node_table`); a model in neither is unknown (404).
- **What the caller sees** when no node answered: the last failure's kind, in words that
  name no node; node ids and addresses go to the gateway's log. Which failures are the
  node's, and how they count, is :mod:`modelgate.core.gateway.faults`.

Nothing here knows gRPC or Redis: they are behind the ports (the node client here, the
node directory and the catalogue of models served recently in the node table).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.core.gateway.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from modelgate.core.gateway.capacity import CapacityPolicy
from modelgate.core.gateway.cold_start import ColdStartWait
from modelgate.core.gateway.faults import caller_error, is_node_fault, record_failure
from modelgate.core.gateway.node_calls import (
    ANOMALY_PARAMETERS,
    ANOMALY_SCORE,
    SCREENED,
    SCREENED_KEY,
)
from modelgate.core.gateway.node_table import SERVED_READ_S, NodeTable
from modelgate.core.gateway.nodes import NodeInfo
from modelgate.core.gateway.ports import (
    ClusterObserver,
    NodeClient,
    NodeDirectory,
    ServedModels,
)
from modelgate.core.gateway.regions import RegionPolicy
from modelgate.core.gateway.retry import RetryBudget, backoff
from modelgate.core.gateway.tenant_metadata import tenant_metadata
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import Arrays, Timing
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["REGION_PARAMETER", "Cluster"]

log = logging.getLogger("modelgate.cluster")

Array = np.ndarray[Any, Any]

#: a retry needs at least this much of the caller's deadline left
_MIN_ATTEMPT_S = 0.002
#: the response parameter naming the region of the node that answered
REGION_PARAMETER = "region"


@dataclass(slots=True)
class _NodeState:
    info: NodeInfo
    breaker: CircuitBreaker
    outstanding: int = 0
    versions: dict[tuple[str, int], CircuitBreaker] = field(default_factory=dict)
    #: it has answered a call since it joined the table (a node that just came back is
    #: not yet a healthy region's: core/gateway/regions.py)
    answered: bool = False


class Cluster:
    """One gateway's forwarding to its nodes: its node table, with the nodes' breakers,
    load counts and the retry budget."""

    def __init__(
        self,
        directory: NodeDirectory,
        client: NodeClient,
        *,
        breaker: BreakerPolicy | None = None,
        budget: RetryBudget | None = None,
        default_timeout_s: float = 30.0,
        max_attempts: int = 3,
        headers: Callable[[], Mapping[str, str]] | None = None,
        observer: ClusterObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        regions: RegionPolicy | None = None,
        capacity: CapacityPolicy | None = None,
        cold_start: ColdStartWait | None = None,
        served: ServedModels | None = None,
        served_read_s: float = SERVED_READ_S,
    ):
        #: what the nodes announce, and the catalog they make
        self.table = NodeTable(directory, served=served, served_read_s=served_read_s, clock=clock)
        self.client = client
        self.policy = breaker or BreakerPolicy()
        self.budget = budget or RetryBudget()
        self.default_timeout_s = default_timeout_s
        self.max_attempts = max_attempts
        #: extra call metadata per attempt (the trace context of the request in progress)
        self._headers = headers
        self.observer = observer
        self._clock = clock
        self._rng = rng or random.Random()
        #: where requests for a model no node announces wait for one (None: no wait)
        self.cold_start = cold_start
        #: node id -> its breakers and load, for the nodes of the table (in its order)
        self._nodes: dict[str, _NodeState] = {}
        self._logged_at = -1e9  # when a failed request was last logged
        self._warned: set[str] = set()  # nodes that checked calls the gateway had checked
        self._failed_answers = 0  # failed requests not logged yet
        #: None on a gateway without a region: the choice costs what it did before regions
        self.regions = regions
        self._capacity_policy = capacity or CapacityPolicy()
        #: the capacity policy while a node of the table is spot (None: none is)
        self._capacity: CapacityPolicy | None = None
        #: regions or capacity classes narrow the choice (False: neither does)
        self._placed = regions is not None

    # -- the node table ------------------------------------------------------------------
    @property
    def catalog(self) -> dict[str, dict[int, ModelManifest]]:
        """Models and their manifests as of the last refresh: what the gateway may load
        (:attr:`NodeTable.catalog`)."""
        return self.table.catalog

    @property
    def profiles(self) -> dict[str, dict[int, Mapping[str, Any]]]:
        """The reference profiles whose anomaly checks the gateway runs itself
        (:attr:`NodeTable.profiles`)."""
        return self.table.profiles

    async def refresh(self) -> set[str]:
        """Refresh the node table (:meth:`NodeTable.refresh`: returns the models whose
        versions or manifests changed; raises what the directory raised, and the previous
        table stays) and route by it: a node new to the table gets its breaker, a node
        that stays keeps its breakers and load count, a departed one's series are
        forgotten, and the requests waiting for a node look again."""
        changed = await self.table.refresh()
        fresh: dict[str, _NodeState] = {}
        for info in self.table.nodes.values():
            state = self._nodes.get(info.id)
            if state is None:
                state = _NodeState(info, self._breaker(info.id, None, None))
            else:
                state.info = info
            fresh[info.id] = state
        departed = set(self._nodes) - set(fresh)
        self._nodes = fresh
        spot = any(s.info.capacity == "spot" for s in fresh.values())
        self._capacity = self._capacity_policy if spot else None
        self._placed = self.regions is not None or spot
        if self.observer is not None:
            for node in sorted(departed):
                self.observer.departed(node)
            self.observer.nodes(len(fresh))
        if self.cold_start is not None:
            self.cold_start.announced()
        return changed

    def nodes(self) -> list[dict[str, Any]]:
        """The table as plain data (the admin API's view)."""
        return [
            {
                "id": s.info.id,
                "address": s.info.address,
                "hardware": s.info.hardware,
                "region": s.info.region or None,
                "capacity": s.info.capacity,
                "memory_bytes": s.info.memory_bytes,
                "draining": s.info.draining,
                "breaker": s.breaker.state,
                "outstanding": s.outstanding,
                "models": {
                    name: sorted(versions) for name, versions in sorted(s.info.models.items())
                },
            }
            for s in sorted(self._nodes.values(), key=lambda s: s.info.id)
        ]

    def _breaker(self, node: str, model: str | None, version: int | None) -> CircuitBreaker:
        observer = self.observer
        if observer is None:
            return CircuitBreaker(self.policy, clock=self._clock)
        label = None if version is None else str(version)

        def changed(state: BreakerState) -> None:
            observer.breaker(node, model, label, state)
            log.warning(
                "breaker of node %s%s is %s",
                node,
                f" ({model} v{version})" if model is not None else "",
                state,
            )

        observer.breaker(node, model, label, "closed")
        return CircuitBreaker(self.policy, clock=self._clock, on_change=changed)

    # -- forwarding ----------------------------------------------------------------------
    def _choose(
        self, model: str, version: int, prefer: str, tried: set[str], critical: bool = True
    ) -> tuple[_NodeState, CircuitBreaker] | None:
        candidates: list[tuple[_NodeState, CircuitBreaker]] = []
        for state in self._nodes.values():
            info = state.info
            if info.draining or not info.serves(model, version):
                continue
            key = (model, version)
            breaker = state.versions.get(key)
            if breaker is None:
                breaker = state.versions[key] = self._breaker(info.id, model, version)
            if state.breaker.available() and breaker.available():
                candidates.append((state, breaker))
        if not candidates:
            return None
        fresh = [c for c in candidates if c[0].info.id not in tried]
        pool = fresh or candidates
        if self._placed:  # regions or spot nodes: else the choice costs what it did before
            pool = self._place(model, version, candidates, pool, not tried, critical)
        preferred = [c for c in pool if c[0].info.hardware == prefer]
        pool = preferred or pool
        least = min(c[0].outstanding for c in pool)
        return self._rng.choice([c for c in pool if c[0].outstanding == least])

    def _place(
        self,
        model: str,
        version: int,
        candidates: list[tuple[_NodeState, CircuitBreaker]],
        pool: list[tuple[_NodeState, CircuitBreaker]],
        first: bool,
        critical: bool,
    ) -> list[tuple[_NodeState, CircuitBreaker]]:
        """``pool`` narrowed to the nearest region's nodes, then to the capacity class the
        request prefers; the first attempt of a request notes the regions' health."""
        regions = self.regions
        if regions is not None:
            if first:
                regions.observe(model, version, _healthy_regions(candidates))
            pool = regions.nearest(pool, _region_of)
        if self._capacity is not None:
            pool = self._capacity.prefer(pool, critical, _capacity_of, _outstanding_of)
        return pool

    async def forward(
        self,
        model: str,
        version: int,
        inputs: Arrays,
        timing: Timing | None,
        *,
        prefer: str = "cpu",
        screened: bool = False,
    ) -> dict[str, Array]:
        """Run one inference on a node; see the module docstring for how it is chosen and
        when it is retried. ``screened``: the gateway checked the inputs for anomalies, and
        the call tells the node so (:data:`~modelgate.core.gateway.node_calls.SCREENED_KEY`)."""
        deadline = timing.deadline if timing is not None else None
        if deadline is None:
            deadline = self._clock() + self.default_timeout_s
        self.budget.request()
        tried: set[str] = set()
        error: ModelgateError | None = None
        critical = timing is None or timing.critical
        for attempt in range(self.max_attempts):
            if attempt:
                if not self.budget.try_retry():
                    self._retried("budget_exhausted")
                    break
                pause = backoff(attempt - 1, rng=self._rng)
                if self._clock() + pause + _MIN_ATTEMPT_S >= deadline:
                    self._retried("deadline")
                    break
                await asyncio.sleep(pause)
                self._retried("retried")
            chosen = self._choose(model, version, prefer, tried, critical)
            if chosen is None and not attempt and await self._started(model, version, deadline):
                chosen = self._choose(model, version, prefer, tried, critical)
            if chosen is None:
                break
            state, breaker = chosen
            if not state.breaker.allow():
                continue
            if not breaker.allow():
                state.breaker.release()
                continue
            remaining = deadline - self._clock()
            if remaining > _MIN_ATTEMPT_S * 4 and self._has_other(
                model, version, tried | {state.info.id}
            ):
                remaining /= 2  # a per-try timeout: a stalled node leaves time for another
            if remaining <= 0:
                state.breaker.release()
                breaker.release()
                raise ModelgateError(ErrorKind.DEADLINE_EXCEEDED, "the request's deadline passed")
            tried.add(state.info.id)
            state.outstanding += 1
            started = time.perf_counter_ns()
            try:
                answer = await self.client.infer(
                    state.info,
                    model,
                    version,
                    inputs,
                    timeout_s=remaining,
                    headers=self._call_headers(timing, screened),
                )
            except ModelgateError as exc:
                self._failed(state, breaker, exc)
                self._count(state, exc.kind.value)
                if not is_node_fault(exc.kind):
                    raise  # the caller's error: the node answered it
                error = exc
                continue
            except asyncio.CancelledError:
                state.breaker.release()
                breaker.release()
                raise
            finally:
                state.outstanding -= 1
            state.breaker.success()
            breaker.success()
            state.answered = True
            self._count(state, "ok")
            if timing is not None:
                timing.compute_ns = time.perf_counter_ns() - started
                timing.hardware = state.info.hardware
                timing.node = state.info.id
                parameters = answer.parameters
                if screened and ANOMALY_SCORE in parameters:  # the node checked it again
                    parameters = self._checked_twice(state.info.id, model, parameters)
                if state.info.region:  # where it ran, when regions are in use
                    parameters[REGION_PARAMETER] = state.info.region
                timing.parameters = parameters or None
            return answer.outputs
        if error is not None:
            raise self._for_caller(model, version, error)
        raise ModelgateError(
            ErrorKind.UNAVAILABLE,
            f"no node can serve model '{model}' version {version} now",
            retry_after=1.0,
        )

    async def _started(self, model: str, version: int, deadline: float) -> bool:
        """Whether a node announcing the version came up within the cold-start wait (none
        announced it when the request came)."""

        def announced() -> bool:
            return any(
                not s.info.draining and s.info.serves(model, version) for s in self._nodes.values()
            )

        if self.cold_start is None or announced():
            return False  # announced but failing (breakers open): not a cold start
        return await self.cold_start.wait(announced, deadline)

    def _call_headers(self, timing: Timing | None, screened: bool) -> Mapping[str, str]:
        """One attempt's metadata: the trace context, the tenant the call is for (the
        node's batcher turns and fair shedding; :mod:`modelgate.core.gateway.tenant_metadata`),
        and whether the gateway checked its inputs for anomalies."""
        headers = self._headers() if self._headers is not None else {}
        tenant = tenant_metadata(timing)
        if screened:
            tenant[SCREENED_KEY] = SCREENED
        if not tenant:
            return headers
        return {**headers, **tenant}

    def _checked_twice(self, node: str, model: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """A node's answer to a call the gateway had checked, without the node's own anomaly
        verdict (of the whole merged call, not of this caller's rows); logged once per
        node: its gateways' key is not its admin key, so it did not believe the entry."""
        if node not in self._warned:
            self._warned.add(node)
            log.warning(
                "node %s checked model %s's merged calls for anomalies itself: give it the "
                "gateways' MODELGATE_NODE_KEY as its MODELGATE_ADMIN_KEY (docs/scale-out.md)",
                node,
                model,
            )
        return {k: v for k, v in parameters.items() if k not in ANOMALY_PARAMETERS}

    def _for_caller(self, model: str, version: int, error: ModelgateError) -> ModelgateError:
        """The error the caller sees when no node answered (:func:`caller_error`); node ids
        and addresses are the operator's, in this log, at most once a second."""
        if not is_node_fault(error.kind):
            return error
        now = self._clock()
        self._failed_answers += 1
        if now - self._logged_at >= 1.0:
            log.warning(
                "model %s v%d: %d requests failed on every node tried since the last such "
                "line; the last: %s",
                model, version, self._failed_answers, error.message,
            )  # fmt: skip
            self._logged_at = now
            self._failed_answers = 0
        return caller_error(model, version, error)

    def _has_other(self, model: str, version: int, tried: set[str]) -> bool:
        """True when a node other than ``tried`` ones could take a retry."""
        return any(
            s.info.id not in tried
            and not s.info.draining
            and s.info.serves(model, version)
            and s.breaker.available()
            for s in self._nodes.values()
        )

    def _failed(self, state: _NodeState, breaker: CircuitBreaker, exc: ModelgateError) -> None:
        record_failure(state.breaker, breaker, exc)

    def _count(self, state: _NodeState, outcome: str) -> None:
        if self.observer is not None:
            self.observer.forwarded(state.info.id, outcome)
        if self.regions is not None:
            self.regions.counted(state.info.region, outcome)

    def _retried(self, outcome: str) -> None:
        if self.observer is not None:
            self.observer.retried(outcome)

    async def close(self) -> None:
        await self.client.close()
        await self.table.close()


def _region_of(candidate: tuple[_NodeState, CircuitBreaker]) -> str:
    return candidate[0].info.region


def _capacity_of(candidate: tuple[_NodeState, CircuitBreaker]) -> str:
    return candidate[0].info.capacity


def _outstanding_of(candidate: tuple[_NodeState, CircuitBreaker]) -> int:
    return candidate[0].outstanding


def _healthy_regions(candidates: list[tuple[_NodeState, CircuitBreaker]]) -> list[str]:
    """The regions of the candidates that answered since they joined and whose breakers are
    closed (see core/gateway/regions.py)."""
    return [
        state.info.region
        for state, breaker in candidates
        if state.answered and state.breaker.state == "closed" and breaker.state == "closed"
    ]
