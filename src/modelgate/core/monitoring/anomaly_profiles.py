"""The part of a version's reference profile that its anomaly check reads, as a node
announces it to its gateways.

A gateway screens each request for anomalies itself, before it merges concurrent requests
into one node call (docs/scale-out.md, "Merging concurrent requests into one node call"),
but it has no model files: the node reads the version's ``reference.json`` and announces
:func:`screen_profile` of it with the version's manifest. That is exactly what
:func:`~modelgate.core.monitoring.anomaly_scores.profile_bounds` reads (each scored
feature's ``min``, ``max``, ``quantiles`` and its categories' ``values``), as the same JSON
numbers (a float survives JSON unchanged), so the gateway builds the very bounds the node,
or an all-in-one server, builds from the whole file: the same score, flag and refusal to
the last bit. It leaves out what only drift monitoring reads (histograms, counts, means,
outputs), which stays on the node: 2.8 kB of the credit-risk demo's profile, which is
8.2 kB as compact JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelgate.core.serving.manifest import ModelManifest

__all__ = ["screen_profile"]

#: what :meth:`~modelgate.core.monitoring.anomaly_scores.FeatureBounds.of` reads of a column
_KEPT = ("min", "max", "quantiles")


def screen_profile(document: Mapping[str, Any], manifest: ModelManifest) -> dict[str, Any] | None:
    """The statistics of ``document`` (a reference profile) that the anomaly check of a
    version of ``manifest`` reads, as a profile of the same shape; None when it describes
    none of the inputs the check scores. TypeError or AttributeError when the profile is not
    shaped as one (its check would not parse either)."""
    features = document.get("features") or {}
    kept: dict[str, Any] = {}
    for spec in manifest.inputs:
        if spec.datatype == "BYTES":  # not scored
            continue
        names = spec.feature_names or (spec.name,)
        for name in names:
            column = features.get(name)
            if column is None:
                continue
            entry = {key: column[key] for key in _KEPT if key in column}
            seen = (column.get("categories") or {}).get("values")
            if seen:
                entry["categories"] = {"values": seen}
            kept[name] = entry
    return {"features": kept} if kept else None
