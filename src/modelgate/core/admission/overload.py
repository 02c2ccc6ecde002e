"""Shedding on queueing delay (issue 15): a CoDel-style controller that says when a
saturated process must refuse new inference requests at once, before reading them.

The in-flight cap (:class:`~modelgate.core.admission.admission.Admission`) counts only
requests already parsed, authenticated and admitted; under CPU saturation the queue forms
before that, in socket buffers and the event loop, and requests time out unanswered while
the cap is never reached. :class:`QueueDelay` is fed delay samples instead (the event
loop's lag, :mod:`modelgate.boot.loop_lag`, and each REST request's own wait, its
*sojourn time*: from its first bytes being read to its handler starting, :meth:`sojourn`)
and applies CoDel's rule to each signal apart (shedding when either says so; a sojourn
verdict lapses after an interval without requests): it sheds once the
delay has stayed at or above ``target`` for a whole ``interval`` (the minimum over the
interval is above target: a short burst is absorbed, a standing queue is not), and stops
as soon as one sample falls under ``target`` (that interval's minimum is under it).

Priority tiers and fair share: while the delay has stayed above ``target`` only, a request
of a plan below the highest priority (9) is shed when its tenant's share of recent
admissions is at or over its weighted fair share (:mod:`modelgate.core.admission.fairness`:
weights from the plans' rates), and admitted while under it, so the tenant that sends most
is shed first and a tenant within its share is still served; the highest tier (and the
admin tenant) is not shed, and every request is shed when authentication is off (there
are no tenants to tell apart). Once the delay has also stayed above twice ``target`` for an
interval, every request is shed.

Readiness follows the same signal: not ready once shedding has lasted ``ready_after_s``,
ready again as soon as it stops. Readiness only moves a load balancer's traffic away;
requests that still arrive are served or shed by the same rule, so a single replica never
locks itself out.

Loop lag alone misses requests already parsed and waiting for their turn (a timer waits
one loop iteration, a request waits behind every request ahead of it); the sojourn time is
CoDel's own input and sees them. Neither sees a request admitted and waiting in a model's
batch queue (up to ``max_inflight`` of them, while a model runs in a thread or on an
accelerator and the loop is idle): the batchers report the wait of the oldest request of
each batch they take (:meth:`queued`, fed by :meth:`watch_model`, the registry's load
hook), a third signal with the same rule and bounds, so a saturated model sheds early and
readiness follows it. The controller is the process's: a model whose queue stays long
sheds the inference requests of every model of the process (a replica per model keeps
them apart). A request whose wait alone is past ``max_wait_s`` (or past
the deadline its client set) is refused at once, whatever the controller says: its client
is about to give up, and serving it would only delay the requests behind it.

**Gradual shedding** (``gradual=True``, the setting's default law ``pie``): instead of
refusing every eligible request while the rule above holds, a *fraction* of them
(:attr:`QueueDelay.fraction`) is refused, set by PIE's control law (RFC 8033, a PI
controller on the queueing delay): every ``update_s`` the fraction moves by
``alpha * (delay - target) + beta * (delay - previous delay)`` (both terms scaled down
while the fraction is small, as RFC 8033's auto-tuning does), where the delay of an update
is the largest of the signals' minimum samples since the last update (each signal a lower
bound of the real delay, each minimum robust to a burst; a signal without samples since
holds its last minimum until it lapses, an interval later); the fraction decays by 2% an
update while the delay stays under half the target, and is 0 again under 0.1%. Nothing is
refused during a burst allowance of ``interval`` after an idle spell (PIE's
``max_burst``), so a short burst is absorbed as CoDel's rule absorbs it. The on/off law
swings between admitting every request and refusing every eligible one, so that a backlog
builds in the kernel while it admits and clients see timeouts; a fraction that settles
where the delay stays at the target refuses only the excess. Priority tiers and fair share
apply to the requests the fraction picks (the integral term raises the fraction until
enough of the excess is refused). :attr:`severe` (every tier is eligible) still follows
the twice-target rule.

**The accept queue** (:meth:`QueueDelay.connected`, a fourth signal, judged apart): each
new connection's first request reports its wait since the kernel received it, most of it
in the listener's accept queue, and how many connections queue there. Once those waits
have stood at or above the target for an interval with the queue holding at least
``ACCEPT_QUEUE_STANDING`` connections, the controller is :attr:`~QueueDelay.draining`:
every inference request is refused, whoever sends it, until a new connection is read
within the target. Under a flood of new connections this is where requests wait, unseen by
the other signals (why, and what it costs: :meth:`QueueDelay.connected`).

Pure and O(1) per sample; the clock (and the gradual law's random draw) are injectable
(tests use a manual one). The adapters' cost while not shedding is one attribute read
(:attr:`QueueDelay.shedding`); while shedding gradually, one random draw per request.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import Principal
from modelgate.core.admission.control_laws import Above, pie_step
from modelgate.core.admission.fairness import DEFAULT_WEIGHT, TenantShares, fair_weight
from modelgate.core.serving.batching import BatchingRuntime
from modelgate.errors import ErrorKind, ModelgateError

if TYPE_CHECKING:
    from modelgate.core.serving.registry import LoadedVersion

__all__ = ["HIGHEST_PRIORITY", "QueueDelay"]

#: the highest plan priority: shed only when the delay passes twice the target
HIGHEST_PRIORITY = 9

#: the accept queue stands (:meth:`QueueDelay.connected`) only with at least this many
#: connections in it: fewer are accepted within a turn of the loop, and a long wait with a
#: short queue was the loop's (a saturated loop takes a turn or two, each up to a CPU
#: quota's period, to accept and read a connection: measured at 1x capacity on a server
#: held to a tenth of a core, waits past 50 ms with under 20 queued)
ACCEPT_QUEUE_STANDING = 64


class QueueDelay:
    """Whether to shed, from queueing-delay samples (seconds).

    ``count``: told of each request shed, with the caller's plan priority (None: no plan);
    the metrics' counter. ``count_tenant``: told of the tenant of each request shed (None:
    authentication is off), the per-tenant counter. ``shares``: the tenants' recent
    admissions while shedding (default: 1 s half-life, 1,024 tenants)."""

    def __init__(
        self,
        *,
        target_s: float,
        interval_s: float,
        ready_after_s: float = 2.0,
        retry_after_s: float = 1.0,
        max_wait_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        count: Callable[[int | None], None] | None = None,
        count_tenant: Callable[[str], None] | None = None,
        shares: TenantShares | None = None,
        gradual: bool = False,
        update_s: float = 0.015,
        draw: Callable[[], float] = random.random,
    ) -> None:
        if target_s <= 0 or interval_s <= 0 or update_s <= 0:
            raise ValueError("target_s, interval_s and update_s must be positive")
        self.target_s = target_s
        self.interval_s = interval_s
        self.ready_after_s = ready_after_s
        self.retry_after_s = retry_after_s
        #: a request that waited longer than this is refused at once (None: no bound)
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.count = count
        self.count_tenant = count_tenant
        #: recent admissions per tenant (:meth:`admitted`), moved on by :meth:`observe`
        self.shares = shares if shares is not None else TenantShares()
        #: shed requests of plans below the highest priority (the adapters read only this
        #: while not shedding)
        self.shedding = False
        #: shed every request: the delay has also stayed above twice the target
        self.severe = False
        #: when the current shedding began (meaningful while :attr:`shedding`)
        self.shedding_since = 0.0
        #: the last sample, for the metrics
        self.last_s = 0.0
        #: the share of eligible requests refused while :attr:`shedding`: 1 under the on/off
        #: law, PIE's fraction under the gradual one
        self.fraction = 0.0 if gradual else 1.0
        self.gradual = gradual
        self.update_s = update_s
        self.draw = draw
        # the gradual law's state: each signal's least sample since the last update (lag,
        # sojourn, model queue), the last such least and when it was taken, the previous
        # update's delay, when the last update was,
        # what is left of the burst allowance
        self._least = [math.inf, math.inf, math.inf]
        self._held = [0.0, 0.0, 0.0]
        self._held_at = [-math.inf, -math.inf, -math.inf]
        self._previous_s = 0.0
        self._updated_at = -math.inf
        self._burst_s = interval_s
        # one CoDel test per signal and threshold: each signal is a lower bound of the real
        # queueing delay (the lag misses requests waiting behind others, a request's sojourn
        # misses bytes not yet read), so the controller sheds when either says so
        self._lag = (Above(target_s, interval_s), Above(2 * target_s, interval_s))
        self._wait = (Above(target_s, interval_s), Above(2 * target_s, interval_s))
        self._queue = (Above(target_s, interval_s), Above(2 * target_s, interval_s))
        self._lag_says = (False, False)
        self._wait_says = (False, False)
        self._queue_says = (False, False)
        #: when the last sojourn (model queue wait) was observed: a verdict older than an
        #: interval lapses (no requests, no queue of them)
        self._wait_at = self._queue_at = -math.inf
        # the listener's accept queue (:meth:`connected`): CoDel's test, on its own
        self._accept = Above(target_s, interval_s)
        #: refuse every inference request, whoever sends it: the accept queue has stood
        #: above the target for an interval (:meth:`connected`)
        self.draining = False
        #: when the last new connection's wait (:meth:`connected`) was observed
        self._accept_at = -math.inf

    def observe(self, delay_s: float) -> None:
        """One sample of the event loop's lag, taken now."""
        now = self.clock()
        above, twice = self._lag
        self._lag_says = (above.observe(delay_s, now), twice.observe(delay_s, now))
        if delay_s < self._least[0]:
            self._least[0] = delay_s
        if now - self._wait_at > self.interval_s:  # lapsed: no request for an interval
            self._wait_says = (False, False)
            self._wait[0].since = self._wait[1].since = None
        if now - self._queue_at > self.interval_s:  # lapsed: no batch for an interval
            self._queue_says = (False, False)
            self._queue[0].since = self._queue[1].since = None
        if self.draining and now - self._accept_at > self.interval_s:
            self.draining = False  # lapsed: no new connection for an interval
            self._accept.since = None
        self._decide(delay_s, now)

    def connected(self, waited_s: float, queued: int | None = None) -> bool:
        """One sample of the listener's accept queue: how long a new connection's first
        request waited from the kernel's receipt of its bytes to its headers being parsed
        (seconds), and how many connections wait in the queue now (None: unknown). Returns
        whether that request, if an inference request, is refused whoever sends it
        (counted when the caller says so, :meth:`shed_new`): the controller is
        :attr:`draining`, or the request waited past :attr:`max_wait_s`.

        Draining: once new connections' waits have stayed at or above the target for an
        interval (CoDel's rule, on this queue alone) with at least
        ``ACCEPT_QUEUE_STANDING`` connections queued, every inference request is refused,
        on kept connections too and whatever its tier, until one new connection is read
        within the target (or none comes for an interval). No fraction: the queue is gone
        in a moment once nothing is served, and a fraction's inertia would refuse on
        after it. A signal of its own: connections wait in the accept queue in arrival
        order, so its least wait over an interval is that queue's standing delay, but
        requests on kept connections skip it (they are read within a loop iteration);
        mixed into the sojourn, whose least sample is theirs, the queue went unseen while
        it filled (measured: full, 2,048 connections, their requests waiting 4-15 s, and
        clients that gave up reconnecting at a cost to the server of about a served request
        each). A request refused here is answered on its connection, which the client
        keeps, so it need not open another."""
        now = self.clock()
        self._accept_at = now
        standing = waited_s if queued is None or queued >= ACCEPT_QUEUE_STANDING else 0.0
        self.draining = draining = self._accept.observe(standing, now)
        if draining and not (self.shedding and self.severe):  # now, not at the next update
            if not self.shedding:
                self.shedding_since = now
            self.shedding = self.severe = True
        # nothing else moves: this signal is not the gradual law's (its fraction's inertia
        # would refuse on after the queue is gone); the next update ends what draining began
        bound = self.max_wait_s
        return draining or (bound is not None and waited_s >= bound)

    def shed_new(self) -> None:
        """Count a new connection's first request refused on :meth:`connected`'s word."""
        self._shed(None, None)

    def queued(self, waited_s: float) -> None:
        """One sample of a model's batch queue: how long the oldest request of the batch
        just taken waited in it (seconds)."""
        now = self.clock()
        above, twice = self._queue
        self._queue_says = (above.observe(waited_s, now), twice.observe(waited_s, now))
        self._queue_at = now
        if waited_s < self._least[2]:
            self._least[2] = waited_s
        self._decide(waited_s, now)

    def watch_model(self, loaded: LoadedVersion) -> None:
        """The registry's load hook: a batched version reports its queue's wait to
        :meth:`queued` (a version without batching has no queue of its own)."""
        runtime = loaded.runtime
        if isinstance(runtime, BatchingRuntime):
            runtime.on_queue_wait = self.queued

    def sojourn(self, arrived: float) -> float:
        """One request's wait, from ``arrived`` (its first bytes read, on :attr:`clock`) to
        now, its sojourn time, fed to the controller; returns it (seconds)."""
        now = self.clock()
        waited = now - arrived
        above, twice = self._wait
        self._wait_says = (above.observe(waited, now), twice.observe(waited, now))
        self._wait_at = now
        if waited < self._least[1]:
            self._least[1] = waited
        self._decide(waited, now)
        return waited

    def too_late(self, waited_s: float) -> bool:
        """Whether a request that waited ``waited_s`` is past :attr:`max_wait_s` (counted
        as shed when it is)."""
        bound = self.max_wait_s
        if bound is None or waited_s < bound:
            return False
        return self._shed(None, None)

    def refuses_unread(self, waited_s: float) -> bool:
        """Whether a request not yet read (its caller unknown) is shed now, whoever sends
        it: it waited ``waited_s``, past :attr:`max_wait_s`, or every request is eligible
        (:attr:`severe`) and the draw picks it (:attr:`fraction`: always under the on/off
        law); counted as shed (priority unknown) when it is. The protocol asks
        this before the app runs; the rest (fair share, priority) needs the caller."""
        bound = self.max_wait_s
        if bound is not None and waited_s >= bound:
            return self._shed(None, None)
        if not self.draining and (
            not self.severe or (self.fraction < 1.0 and self.draw() >= self.fraction)
        ):
            return False
        return self._shed(None, None)

    def _decide(self, delay_s: float, now: float) -> None:
        self.last_s = delay_s
        self.shares.tick(now)
        lag, wait, queue = self._lag_says, self._wait_says, self._queue_says
        severe = lag[1] or wait[1] or queue[1]
        if self.gradual:
            if now - self._updated_at < self.update_s:
                return
            shedding = self._update(now)
            severe = severe and shedding
        else:
            shedding = lag[0] or wait[0] or queue[0]
        if self.draining:  # every inference request, whoever sends it (:meth:`connected`)
            shedding = severe = True
        self.severe = severe
        if shedding and not self.shedding:
            self.shedding_since = now
        self.shedding = shedding

    def _update(self, now: float) -> bool:
        """The gradual law's update (every :attr:`update_s`): returns whether to shed."""
        least, held, held_at = self._least, self._held, self._held_at
        delay = 0.0
        for i in range(3):
            if least[i] != math.inf:  # this signal's least sample since the last update
                held[i], held_at[i], least[i] = least[i], now, math.inf
            if now - held_at[i] <= self.interval_s and held[i] > delay:
                delay = held[i]  # a signal without samples holds its last (lapsing after
                # an interval): a model's queue reports once per batch, not per update
        previous = self._previous_s
        last = self._updated_at
        elapsed = 0.0 if last == -math.inf else min(now - last, self.interval_s)
        self._updated_at = now
        self._previous_s = delay
        self.fraction = fraction = pie_step(self.fraction, delay, previous, self.target_s)
        if fraction == 0.0 and delay < self.target_s / 2 and previous < self.target_s / 2:
            self._burst_s = self.interval_s  # idle again: the next burst is absorbed
        elif self._burst_s > 0:
            self._burst_s -= elapsed
        return fraction > 0.0 and self._burst_s <= 0

    def refuses(self, principal: Principal | None) -> bool:
        """Whether a new request of ``principal`` (None: authentication is off) is shed
        now: the draw picks it (:attr:`fraction`), and its tier and share make it eligible;
        a shed request is counted. Call only while :attr:`shedding` (O(1))."""
        if not self.shedding:
            return False
        if self.draining:
            return self._shed(None, None) if principal is None else self._shed_all(principal)
        if self.fraction < 1.0 and self.draw() >= self.fraction:
            return False
        if principal is None:
            return self._shed(None, None)
        behalf = principal.on_behalf
        if behalf is not None:  # a gateway's call for a tenant: judged as that tenant's
            return self._refuses(behalf.tenant, behalf.priority, behalf.weight)
        plan = principal.plan
        if self.severe:
            return self._shed(plan.priority, principal.tenant_id)
        top = principal.tenant_id == ADMIN_TENANT or plan.priority >= HIGHEST_PRIORITY
        if top or self.shares.under(principal.tenant_id, fair_weight(plan)):
            return False
        return self._shed(plan.priority, principal.tenant_id)

    def _shed_all(self, principal: Principal) -> bool:
        behalf = principal.on_behalf
        if behalf is not None:
            return self._shed(behalf.priority, behalf.tenant)
        return self._shed(principal.plan.priority, principal.tenant_id)

    def _refuses(self, tenant: str, priority: int, weight: float) -> bool:
        if self.severe:
            return self._shed(priority, tenant)
        if priority >= HIGHEST_PRIORITY or self.shares.under(tenant, weight):
            return False
        return self._shed(priority, tenant)

    def admitted(self, principal: Principal) -> None:
        """Count an admitted request towards its tenant's share (O(1), no clock read); a
        gateway's call counts towards the tenant it is for."""
        behalf = principal.on_behalf
        if behalf is not None:
            self.shares.add(behalf.tenant, behalf.weight)
            return
        rate = principal.plan.requests_per_second  # fair_weight, inline: once per request
        self.shares.add(principal.tenant_id, rate if rate else DEFAULT_WEIGHT)

    def _shed(self, priority: int | None, tenant: str | None) -> bool:
        if self.count is not None:
            self.count(priority)
        if self.count_tenant is not None and tenant is not None:
            self.count_tenant(tenant)
        return True

    def error(self) -> ModelgateError:
        """The answer of a shed request: 503 / UNAVAILABLE with ``Retry-After``."""
        return self.error_for(self.retry_after_s)

    @staticmethod
    def error_for(retry_after_s: float) -> ModelgateError:
        """:meth:`error` for a given ``Retry-After`` (adapters precompute its bytes)."""
        return ModelgateError(
            ErrorKind.OVERLOADED,
            "the server is overloaded: requests wait too long to be served; "
            "tenants over their fair share and lower-priority plans are refused first",
            retry_after=retry_after_s,
        )

    def ready(self) -> bool:
        """False once shedding has lasted ``ready_after_s``: a load balancer should send
        traffic elsewhere (the process still serves what it admits)."""
        return not self.shedding or self.clock() - self.shedding_since < self.ready_after_s
