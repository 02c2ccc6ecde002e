"""The refusal memo: a caller that admission refused is refused again from one dictionary
lookup, before its request is even read, while the refusal is certain to hold (issue 15).

A flooding client's refusals used to take the whole request path (the body read and parsed,
the inputs validated, the limiter asked, a log line written), so they cost about as much as
the inferences of everyone else. When :class:`~modelgate.core.admission.admission.Admission`
refuses a caller for a rate limit or a quota, it notes here "this key (and this model, when
the model's own limit refused) is refused until T"; the protocol adapters ask
:meth:`RefusalMemo.refused` right after authentication (a cached dictionary lookup) and
answer a caller found here at once, with the full path's error: the same status, message,
``Retry-After`` and ``X-RateLimit-*`` values, counted down to now.

Only what is certain is noted, so the memo never refuses a request the full path would
admit:

- a rate limit: until the ``retry_after`` the limiter gave for one request (the limiter
  charges one unit a request; nothing but time gives a bucket its tokens back), counted
  from a clock reading taken *before* the limiter was asked, less a hair for rounding;
  never while the limiter answers from an outage fallback (``degraded``);
- a quota: only when not even one more unit is left (``remaining`` 0: a smaller request
  could pass a rows quota that this one did not), until the period ends;
- every note at most ``max_ttl_s`` (1 s): whatever else changes (a store emptied or
  failed over, a bucket forgotten under a flood of distinct keys, a manifest reloaded),
  a memo refusal is never more than that out of date;
- an entry answers only a principal of the same plan and key limit it was noted for: a
  plan change takes effect with the next request; a revoked or expired key is refused by
  authentication, before the memo is asked.

A model's own limit (``rate_limit`` in its manifest) is noted under the model and version
the request named, and only for a request that no deployment routed (the version that
answers, and so the limit, is then the one the path names).

The memo is per process, like the cached keys: with several workers or replicas each
learns its callers' refusals itself. It holds at most ``max_entries`` callers (the
oldest noted goes first), and an entry past its time is dropped when next looked at.

The adapters answer a memo refusal as early as they can: the HTTP protocol itself, before
the app runs, for a kept-alive connection's known caller (api/rest/early_refusals.py, with
:meth:`RefusalMemo.find` and :meth:`RefusalMemo.count`: it may still leave the request to
the app), the app otherwise; gRPC before the message is decoded. What a memo refusal costs
besides the answer: one increment of
``modelgate_refused_requests_total`` (its reason, as the full path counted it) and one
usage record, as the full path meters a refused request (status ``rate_limited``, no rows,
no compute, under the version and hardware that would have answered), so usage reports
count every request. It reaches no model, so it is not counted in the inference metrics,
and it does not count as an abuse strike (no 429 does). The request log writes the 429s of
a key that was ever noted here, from the memo or the full path, at most once per
``log_interval_s``; the line written says how many were not since the previous one
(:meth:`RefusalMemo.line`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.ports import UsageSink
from modelgate.core.admission.usage import usage_key_id
from modelgate.core.serving.ports import InferenceObserver
from modelgate.errors import ModelgateError

__all__ = ["Refusal", "RefusalMemo"]

#: the key of an entry: (tenant, subject, model, version); model and version are None for
#: a refusal that holds for every model (the tenant's or the key's limit, a quota)
_Key = tuple[str, str, str | None, str | None]


class Refusal:
    """One noted refusal: the full path's error, and until when it holds."""

    __slots__ = (
        "answer",
        "error",
        "key_rate",
        "plan",
        "reason",
        "reset_at",
        "retry_at",
        "seen_at",
        "served",
        "tenant",
        "until",
    )

    def __init__(
        self,
        principal: Principal,
        error: ModelgateError,
        reason: str,
        *,
        until: float,
        retry_at: float,
        reset_at: float,
        now: float,
        served: tuple[str, str] | None = None,
    ) -> None:
        self.error = error
        #: the (version, hardware) that would have answered: what a refusal is metered under
        self.served = served
        self.reason = reason
        self.tenant = principal.tenant_id
        self.plan = principal.plan
        self.key_rate = principal.key_rate
        #: refused strictly before this clock time
        self.until = until
        #: the clock times the error's ``retry_after`` and ``details["reset"]`` count down to
        self.retry_at = retry_at
        self.reset_at = reset_at
        #: when the refusal being answered was looked up
        self.seen_at = now
        #: what an adapter precomputed of its answer (its body, the headers that do not
        #: count down), kept here for the next refusal of this caller; None: nothing yet
        self.answer: object = None

    def answers(self, principal: Principal) -> bool:
        """Whether this note still speaks for ``principal`` (same plan, same key limit)."""
        plan: Plan = principal.plan
        return (plan is self.plan or plan == self.plan) and principal.key_rate == self.key_rate

    def retry_after_s(self) -> float:
        """The error's ``retry_after`` as the full path would give it at the lookup."""
        return self.retry_at - self.seen_at

    def reset_s(self) -> float:
        """The error's ``details["reset"]`` at the lookup: what is left of it, never under
        1 s (the full path's quotas floor it there; a bucket still refusing has more than
        0 left, which ``X-RateLimit-Reset`` rounds up to 1 alike)."""
        return max(self.reset_at - self.seen_at, 1.0)

    def error_now(self) -> ModelgateError:
        """The full path's error as it would read at the lookup."""
        error = self.error
        details = error.details
        if "reset" in details:
            details = {**details, "reset": self.reset_s()}
        return ModelgateError(
            error.kind, error.message, retry_after=self.retry_after_s(), details=details
        )


class RefusalMemo:
    """Callers refused for a rate limit or a quota, until their refusal may no longer hold.

    ``clock`` must be the clock (or run at the rate) of the limiter's; ``observer`` counts
    each memo refusal (``refused``). ``log_interval_s``: at most one request-log line per
    entry in that time."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_ttl_s: float = 1.0,
        log_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        observer: InferenceObserver | None = None,
        usage: UsageSink | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self.max_ttl_s = max_ttl_s
        self.log_interval_s = log_interval_s
        self.clock = clock
        self.observer = observer
        #: where each memo refusal is metered, as the full path meters a refusal
        self.usage = usage
        # insertion order is age: the first entry is the oldest noted
        self._entries: dict[_Key, Refusal] = {}
        #: the same entries, read-only by contract: an adapter's cheap test of whether
        #: anyone is noted (``bool(memo.noted)``) on every request
        self.noted: Mapping[_Key, Refusal] = self._entries
        # (tenant, subject) of a key ever noted -> [when its last 429 line was written,
        # how many of its 429s were not written since]
        self._lines: dict[tuple[str, str], list[float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def remember(
        self,
        principal: Principal,
        error: ModelgateError,
        reason: str,
        *,
        asked_at: float,
        certain_s: float,
        reset_s: float,
        model: tuple[str, str | None] | None = None,
        served: tuple[str, str] | None = None,
    ) -> None:
        """Note a refusal of ``principal``: certain for ``certain_s`` seconds from
        ``asked_at`` (a :attr:`clock` reading taken before the limiter or counter was
        asked); ``error.retry_after`` and ``reset_s`` count from ``asked_at`` too.
        ``model``: the (model, version) the request named, for a model's own limit;
        ``served``: the (version, hardware) that would have answered."""
        certain_s = min(certain_s, self.max_ttl_s)
        if certain_s <= 0:
            return
        name, version = model if model is not None else (None, None)
        key = (principal.tenant_id, principal.subject, name, version)
        entries = self._entries
        if entries.pop(key, None) is None and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        lines = self._lines
        who = (principal.tenant_id, principal.subject)
        if who not in lines:
            if len(lines) >= self.max_entries:
                del lines[next(iter(lines))]
            lines[who] = [-math.inf, 0]
        entries[key] = Refusal(
            principal,
            error,
            reason,
            until=asked_at + certain_s,
            retry_at=asked_at + (error.retry_after or 0.0),
            reset_at=asked_at + reset_s,
            now=self.clock(),
            served=served,
        )

    def refused(self, principal: Principal, model: str, version: str | None) -> Refusal | None:
        """The noted refusal that answers this request now, or None (the full path runs).
        A refusal found is counted (``observer.refused``) and metered (:meth:`count`)."""
        found = self.find(principal, model, version)
        if found is not None:
            self.count(found, principal, model, version)
        return found

    def find(self, principal: Principal, model: str, version: str | None) -> Refusal | None:
        """:meth:`refused` without counting: for an adapter that may still leave the request
        to the full path (which then asks :meth:`refused`), and otherwise calls
        :meth:`count` once it answers."""
        entries = self._entries
        if not entries:  # nobody refused: the common case costs one test
            return None
        tenant, subject = principal.tenant_id, principal.subject
        now = self.clock()
        for key in ((tenant, subject, None, None), (tenant, subject, model, version)):
            found = entries.get(key)
            if found is None:
                continue
            if now >= found.until or not found.answers(principal):
                del entries[key]
                continue
            found.seen_at = now
            return found
        return None

    def count(self, found: Refusal, principal: Principal, model: str, version: str | None) -> None:
        """Count and meter one refusal answered from ``found`` (:meth:`find`'s)."""
        if self.observer is not None:
            self.observer.refused(found.tenant, found.reason)
        if self.usage is not None:
            self._meter(principal, model, version, found)

    def _meter(self, principal: Principal, model: str, version: str | None, found: Refusal) -> None:
        """The usage record of a memo refusal: what the full path records for a refused
        request (no rows, no tokens, no compute)."""
        assert self.usage is not None
        served_version, hardware = found.served if found.served is not None else (version, "")
        self.usage.record(
            found.tenant,
            usage_key_id(principal),
            model,
            served_version,
            hardware=hardware,
            status=found.error.kind.value,
            cache_hit=False,
            rows=0,
            tokens=0,
            latency_ms=0.0,
            compute_ms=0.0,
        )

    def line(self, principal: Principal) -> int | None:
        """Whether the request log writes this 429 of ``principal``: None, a key never
        noted here (written as any line); -1, a line of the key was written less than
        ``log_interval_s`` ago (not written, counted); otherwise written, with the number
        not written since the previous one."""
        found = self._lines.get((principal.tenant_id, principal.subject))
        if found is None:
            return None
        now = self.clock()
        if now - found[0] < self.log_interval_s:
            found[1] += 1
            return -1
        suppressed = int(found[1])
        found[0], found[1] = now, 0
        return suppressed
