"""Version choice on the request path: which version of a model answers this request.

:class:`DeploymentRouter` keeps each model's deployment compiled into a table of
prebuilt :class:`Choice` objects; :meth:`~DeploymentRouter.choose` is a dictionary lookup,
and, for a split or a canary, one 8-byte BLAKE2b hash of the caller's sticky key plus a
few integer mixes. No I/O, no lock, no allocation but the hash.

Sticky assignment (:func:`assign`) is weighted rendezvous hashing: the caller's hash
``h`` gives each variant ``v`` a uniform number ``u_v = mix(h, v)`` in (0, 1), and the
variant with the highest ``ln(u_v) / weight_v`` wins. So:

- a variant wins with probability ``weight / sum(weights)``;
- the same caller gets the same variant as long as the weights stay the same;
- when weights change, a caller moves only from a variant whose weight went down or to one
  whose weight went up: as few callers move as the new weights require (a canary going
  from 5% to 25% keeps every caller it had, and adds 20% more).

The sticky key is the request's ``subject`` parameter (OpenAI's ``user``), else the
credential's subject (the API key id, or the JWT subject), with the model name as salt;
a request with neither (access control off) gets a random variant.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelgate.core.access.identity import Principal
from modelgate.core.traffic.canary import StepWindow, VersionWindow
from modelgate.core.traffic.deployments import Deployment

__all__ = ["Choice", "DeploymentRouter", "assign", "sticky_hash"]

_MASK = (1 << 64) - 1
_UNIT = 2.0**-53
_SUBJECT = "subject"  # the request parameter (modelgate.core.governance.consent.SUBJECT_PARAMETER)


@dataclass(frozen=True, slots=True, eq=False)
class Choice:
    """The version a deployment picked, with what the answer says about it.

    ``window`` is where the request's outcome is counted during a canary; ``shadow`` the
    version a copy goes to (None: no shadow, or this request was not sampled for one)."""

    model: str
    version: str
    variant: str
    stage: str
    revision: int
    shadow: str | None = None
    shadow_percent: int = 0
    window: VersionWindow | None = None


def _mix(x: int) -> int:
    """splitmix64's finalizer: a 64-bit integer to a well-mixed 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def sticky_hash(model: str, key: str) -> int:
    """The 64-bit hash a caller is assigned by (salted with the model's name)."""
    digest = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def assign(h: int, arms: Iterable[tuple[int, float]]) -> int:
    """The index of the winning arm for hash ``h``; ``arms`` are (seed, weight) with
    weight > 0 (see the module docstring)."""
    best, best_score = 0, -math.inf
    log = math.log
    for index, (seed, weight) in enumerate(arms):
        # splitmix64's finalizer of h ^ seed, inlined (it runs per arm on the request path)
        x = ((h ^ seed) + 0x9E3779B97F4A7C15) & _MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        u = (((x ^ (x >> 31)) >> 11) + 0.5) * _UNIT  # in (0, 1), never 0
        score = log(u) / weight
        if score > best_score:
            best, best_score = index, score
    return best


@dataclass(frozen=True, slots=True)
class _Compiled:
    deployment: Deployment
    #: (seed, weight) of each arm with weight > 0, and its prebuilt choice
    arms: tuple[tuple[int, float], ...]
    choices: tuple[Choice, ...]
    #: the same choices with the shadow copy asked for (sampled per request)
    shadowed: tuple[Choice, ...]
    window: StepWindow | None


def _compile(deployment: Deployment) -> _Compiled:
    window = StepWindow.empty() if deployment.canary is not None else None
    shadow = deployment.shadow
    arms: list[tuple[int, float]] = []
    choices: list[Choice] = []
    shadowed: list[Choice] = []
    for version, weight, role in deployment.weights():
        if weight <= 0:
            continue
        arms.append((_mix(version), float(weight)))
        counted = None
        if window is not None:
            counted = window.candidate if role == "canary" else window.baseline
        plain = Choice(
            deployment.model,
            str(version),
            role,
            deployment.stage,
            deployment.revision,
            window=counted,
        )
        choices.append(plain)
        if shadow is not None:
            shadowed.append(
                Choice(
                    deployment.model,
                    str(version),
                    role,
                    deployment.stage,
                    deployment.revision,
                    shadow=str(shadow.version),
                    shadow_percent=shadow.percent,
                    window=counted,
                )
            )
    return _Compiled(deployment, tuple(arms), tuple(choices), tuple(shadowed), window)


class DeploymentRouter:
    """Each model's deployment, compiled; replaced whole when a deployment changes."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._table: dict[str, _Compiled] = {}
        self._random = rng or random.Random()

    # -- the request path ----------------------------------------------------------------
    def choose(
        self, model: str, principal: Principal | None, parameters: Mapping[str, Any]
    ) -> Choice | None:
        """The choice for a request that names no version; None: the model has no
        deployment (the registry's default answers)."""
        compiled = self._table.get(model)
        if compiled is None:
            return None
        index = 0
        if len(compiled.arms) > 1:
            subject = parameters.get(_SUBJECT) if parameters else None
            if subject and isinstance(subject, (str, int)) and subject is not True:
                h = sticky_hash(model, f"s:{subject}")
            elif principal is not None:
                h = sticky_hash(model, f"k:{principal.subject}")
            else:
                h = self._random.getrandbits(64)
            index = assign(h, compiled.arms)
        if compiled.shadowed:
            percent = compiled.shadowed[0].shadow_percent
            if percent >= 100 or self._random.random() * 100 < percent:
                return compiled.shadowed[index]
        return compiled.choices[index]

    @staticmethod
    def served(choice: Choice, status: str, seconds: float) -> None:
        """Count a routed request's outcome in its canary window (when there is one)."""
        if choice.window is not None:
            choice.window.add(status, seconds)

    # -- updates (off the request path) ----------------------------------------------------
    def update(self, deployments: Iterable[Deployment], *, complete: bool = True) -> list[str]:
        """Apply deployments; with ``complete``, models missing from them lose theirs.
        Unchanged revisions keep their compiled entry (and canary windows). Answers the
        models that changed."""
        changed: list[str] = []
        table = dict(self._table)
        seen: set[str] = set()
        for deployment in deployments:
            seen.add(deployment.model)
            current = table.get(deployment.model)
            if current is not None and current.deployment.revision >= deployment.revision:
                continue
            table[deployment.model] = _compile(deployment)
            changed.append(deployment.model)
        if complete:
            for model in [m for m in table if m not in seen]:
                del table[model]
                changed.append(model)
        self._table = table  # one assignment: the request path sees the old or the new table
        return changed

    def forget(self, model: str) -> None:
        table = dict(self._table)
        if table.pop(model, None) is not None:
            self._table = table

    def deployment(self, model: str) -> Deployment | None:
        compiled = self._table.get(model)
        return compiled.deployment if compiled is not None else None

    def deployments(self) -> list[Deployment]:
        return [c.deployment for c in self._table.values()]

    def window(self, model: str) -> StepWindow | None:
        """This replica's outcomes of the current canary step of ``model``."""
        compiled = self._table.get(model)
        return compiled.window if compiled is not None else None
