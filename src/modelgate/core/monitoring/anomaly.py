"""The anomaly detector: which versions have their requests scored, and what a score above
the threshold does (flag the answer or reject the request), with counts per version.

A model whose manifest has an ``anomaly`` section
(:class:`~modelgate.core.serving.manifest.AnomalySpec`) has every request's inputs scored before
admission and before the runtime runs (how a value scores:
:mod:`~modelgate.core.monitoring.anomaly_scores`).

The profile is read when a version loads (:meth:`AnomalyDetector.prepare`, a registry load
hook running in the loading thread), turned into per-feature bound arrays once, and kept
with the loaded version with its threshold and action. A gateway has no model files: it
builds the check from the part of the profile its nodes announce
(:meth:`AnomalyDetector.announced_screen`, :mod:`~modelgate.core.monitoring.anomaly_profiles`)
when it builds the version. A small request (at most
:data:`_LOOP_MAX` values an input) is scored by a plain loop, typical or not (about 2 µs for a
row of 12 features, a few float operations more for each value outside its quantiles); any
other request is scored by a dozen numpy operations over its input arrays, with no Python loop
per row. An anomalous request costs only what its answer carries: the features' names for a
flag, the reasons (values and ranges in words) for a refusal.
Versions without a ``reference.json``, or whose profile describes none of their inputs
(texts), are not checked.

This catches garbage, values out of the data's range and unseen categories. It does not
catch small adversarial perturbations that stay inside the data's range, nor combinations
of individually typical values that never occur together (each feature is scored alone).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelgate.core.monitoring.anomaly_scores import (
    Array,
    FeatureBounds,
    FloatArray,
    anomalous_features,
    anomaly_reasons,
    profile_bounds,
)
from modelgate.core.monitoring.ports import AnomalyObserver
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.profiles import REFERENCE_FILE, read_reference
from modelgate.core.serving.registry import LoadedVersion
from modelgate.core.serving.tensors import Parameters
from modelgate.errors import ModelgateError, invalid

__all__ = ["AnomalyCounts", "AnomalyDetector"]

log = logging.getLogger("modelgate.anomaly")

#: what a profile that does not parse raises
_UNPARSED = (ValueError, KeyError, TypeError, AttributeError)

#: inputs of at most this many values are scored by a plain loop (above it, the numpy plan
#: costs less than the loop would)
_LOOP_MAX = 256


@dataclass(frozen=True, slots=True)
class AnomalyCounts:
    """A checked version's requests since it loaded, and how many were anomalous."""

    action: str
    threshold: float
    requests: int
    flagged: int
    rejected: int
    #: (flagged + rejected) / requests; None before the first request
    share: float | None


@dataclass(slots=True, eq=False)
class _Screen:
    """A checked version's bounds and what its manifest asks, read once at load."""

    bounds: tuple[FeatureBounds, ...]
    threshold: float
    reject: bool
    #: the version as the observer's label
    version: str
    requests: int = 0
    flagged: int = 0
    rejected: int = 0


@dataclass(slots=True, eq=False)
class _Scored:
    """An input with a score above the threshold, as the answer that names it needs it:
    the loop's worst score per feature (a small request) or the numpy plan's scores."""

    bounds: FeatureBounds
    array: Array
    clamp: bool
    worst: list[float] | None
    scores: FloatArray | None

    def per_feature(self) -> list[float]:
        """Each feature's worst score (NaN rows hide no other row)."""
        if self.worst is not None:
            return self.worst
        assert self.scores is not None
        worst: list[float] = np.fmax.reduce(self.scores, axis=0).tolist()
        return worst

    def scores_array(self) -> FloatArray:
        """The scores per row and feature, for a refusal's reasons (the loop keeps none)."""
        if self.scores is not None:
            return self.scores
        values = self.bounds.values(self.array)
        assert values is not None  # its shape fitted when it was scored
        return self.bounds.value_scores(values, self.clamp)


class AnomalyDetector:
    """Scores requests of versions whose manifest has an ``anomaly`` section."""

    def __init__(self, observer: AnomalyObserver | None = None):
        self.observer = observer
        self._screens: weakref.WeakKeyDictionary[LoadedVersion, _Screen] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # versions of several models may load at once

    def prepare(self, loaded: LoadedVersion) -> None:
        """The registry's load hook (runs in the loading thread, before the version serves):
        read its profile when its manifest asks for checks. A profile that is missing or
        does not parse (logged) leaves the version unchecked."""
        if loaded.manifest.anomaly is None or not loaded.path:
            return
        try:
            document = read_reference(VersionSource(loaded.version, loaded.path, loaded.manifest))
            if document is None:
                log.info(
                    "%s v%d has no reference profile: not checked", loaded.name, loaded.version
                )
                return
            screen = self.build_screen(loaded.manifest, loaded.version, document)
        except ModelgateError as exc:  # refused or unreadable: names no host path
            log.warning("%s: requests are not checked", exc.message)
            return
        except _UNPARSED as exc:
            log.warning(
                "ignoring the reference profile %r of model '%s' version %d: %s: not checked",
                REFERENCE_FILE,
                loaded.name,
                loaded.version,
                exc,
            )
            return
        if screen is not None:
            self.attach(loaded, screen)

    def build_screen(
        self, manifest: ModelManifest, version: int, document: Mapping[str, Any]
    ) -> _Screen | None:
        """The check of a version of ``manifest`` against the reference profile
        ``document`` (or the part of it that :func:`~modelgate.core.monitoring.
        anomaly_profiles.screen_profile` keeps): None when the manifest has no ``anomaly``
        section or the profile describes none of its inputs. ValueError, KeyError,
        TypeError or AttributeError when the profile does not parse."""
        spec = manifest.anomaly
        if spec is None:
            return None
        bounds = profile_bounds(document, manifest)
        if not bounds:
            return None
        return _Screen(tuple(bounds), spec.threshold, spec.action == "reject", str(version))

    def announced_screen(
        self, manifest: ModelManifest, version: int, profile: Mapping[str, Any]
    ) -> _Screen | None:
        """:meth:`build_screen` from the profile a gateway's nodes announce; None (logged)
        when it does not parse: the gateway leaves the check to the nodes then."""
        try:
            return self.build_screen(manifest, version, profile)
        except _UNPARSED as exc:
            log.warning(
                "ignoring the anomaly profile the nodes announce for model '%s' version %d: "
                "%s: the nodes check its requests",
                manifest.name,
                version,
                exc,
            )
            return None

    def attach(self, loaded: LoadedVersion, screen: _Screen) -> None:
        """Check ``loaded``'s requests with ``screen`` (from :meth:`build_screen`) from now on."""
        with self._lock:
            self._screens[loaded] = screen

    def checks(self, loaded: LoadedVersion) -> bool:
        """True when requests of this version are scored."""
        return loaded.manifest.anomaly is not None and loaded in self._screens

    def screen(self, loaded: LoadedVersion, inputs: Mapping[str, Array]) -> Parameters | None:
        """Score the request's validated inputs. None for a version that is not checked;
        else the response parameters (``anomaly_score``, and for a flagged request
        ``anomalous`` and ``anomalous_features``). INVALID_ARGUMENT naming the features when
        the model rejects anomalous requests and this one is."""
        screen = self._screens.get(loaded)
        if screen is None or loaded.manifest.anomaly is None:
            return None
        threshold = screen.threshold
        score = 0.0
        over: list[_Scored] = []  # the inputs that may name a feature: rarely any
        for bounds in screen.bounds:
            array = inputs.get(bounds.input)
            if array is None:
                continue
            small = array.size <= _LOOP_MAX
            values = bounds.values(array, keep_floats=small)
            if values is None:
                continue  # not scored
            clamp = array.dtype not in bounds.unclamped
            worst = bounds.worst_scores(values, clamp) if small else None
            scores: FloatArray | None = None
            if worst is not None:
                top = max(worst)
            else:
                if small:  # NaN, left to the numpy plan, which takes float64 values
                    values = bounds.values(array)
                    assert values is not None
                scores = bounds.value_scores(values, clamp)
                if not scores.size:
                    continue
                top = float(np.maximum.reduce(scores, axis=None))
            score = max(score, top)
            if not top <= threshold:  # above it, or NaN
                over.append(_Scored(bounds, array, clamp, worst, scores))
        screen.requests += 1
        if score <= threshold:
            return {"anomaly_score": round(score, 4)}
        if screen.reject:
            screen.rejected += 1
            if self.observer is not None:
                self.observer.anomalous(loaded.name, screen.version, "rejected")
            scored = [(item.bounds, item.scores_array()) for item in over]
            raise invalid(
                f"input rejected as anomalous (score {score:.2f} above {threshold:g}): "
                + "; ".join(anomaly_reasons(scored, inputs, threshold))
            )
        screen.flagged += 1
        if self.observer is not None:
            self.observer.anomalous(loaded.name, screen.version, "flagged")
        worst_scores = [(item.bounds, item.per_feature()) for item in over]
        return {
            "anomaly_score": round(score, 4),
            "anomalous": True,
            "anomalous_features": ",".join(anomalous_features(worst_scores, threshold)),
        }

    def counts(self, loaded: LoadedVersion) -> AnomalyCounts | None:
        """The version's counts; None when its requests are not checked."""
        spec = loaded.manifest.anomaly
        screen = self._screens.get(loaded)
        if spec is None or screen is None:
            return None
        anomalous = screen.flagged + screen.rejected
        return AnomalyCounts(
            action=spec.action,
            threshold=spec.threshold,
            requests=screen.requests,
            flagged=screen.flagged,
            rejected=screen.rejected,
            share=anomalous / screen.requests if screen.requests else None,
        )
