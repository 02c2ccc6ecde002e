"""What a node announces of itself (see ``modelgate.cluster``), as the gateway reads it: its
id, the address of its OIP gRPC endpoint, its hardware class and memory, its region and
capacity class (:mod:`modelgate.core.gateway.regions`,
:mod:`modelgate.core.gateway.capacity`), whether it is draining, the models and versions it
serves with their manifests (and what their anomaly checks read of their reference
profiles); and what it answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.core.gateway.regions import REGION_PATTERN, valid_region
from modelgate.core.serving.manifest import ModelManifest
from modelgate.errors import ModelgateError

__all__ = ["NodeAnswer", "NodeInfo", "parse_node"]

Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    """What a node answered: its outputs, and the response parameters it sent (for
    example the anomaly check's ``anomaly_score`` and ``anomalous`` flag)."""

    outputs: dict[str, Array]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node as it announced itself."""

    id: str
    #: ``host:port`` of its OIP gRPC endpoint
    address: str
    hardware: str = "cpu"
    memory_bytes: int = 0
    #: model -> version -> manifest, of what it serves
    models: Mapping[str, Mapping[int, ModelManifest]] = field(default_factory=dict)
    draining: bool = False
    #: model -> version -> what its anomaly check reads of its reference profile
    #: (:mod:`modelgate.core.monitoring.anomaly_profiles`), for the versions it announces one of
    profiles: Mapping[str, Mapping[int, Mapping[str, Any]]] = field(default_factory=dict)
    #: models it serves without a version number (a static node's, e.g. MLServer's default):
    #: the gateway shows them as version 1 and calls them with an empty version
    unversioned: frozenset[str] = frozenset()
    #: its region ("": none said; a gateway takes it for its own)
    region: str = ""
    #: ``on-demand`` or ``spot`` (reclaimable at short notice)
    capacity: str = "on-demand"
    #: stage name (``model.stage2``) -> version -> manifest, of the stages of sharded
    #: models it holds (:mod:`modelgate.core.serving.stages`); not models clients see
    stages: Mapping[str, Mapping[int, ModelManifest]] = field(default_factory=dict)

    def version_label(self, model: str, version: int) -> str:
        """The version to name in a call to this node (OIP's ``model_version``)."""
        return "" if model in self.unversioned else str(version)

    def serves(self, model: str, version: int) -> bool:
        versions = self.models.get(model)
        if versions is None:
            versions = self.stages.get(model)  # a stage of a sharded model
        return versions is not None and version in versions


def parse_node(document: Mapping[str, Any]) -> NodeInfo:
    """A node's announcement (JSON-shaped) as a :class:`NodeInfo`; ValueError naming the
    problem when it does not parse (a foreign or corrupt entry)."""
    from modelgate.core.serving.manifest import parse_manifest

    try:
        node_id = str(document["id"])
        address = str(document["address"])
        models: dict[str, dict[int, ModelManifest]] = {}
        profiles: dict[str, dict[int, Mapping[str, Any]]] = {}
        for name, entry in (document.get("models") or {}).items():
            versions = {}
            for number, manifest in (entry.get("versions") or {}).items():
                data = {k: v for k, v in manifest.items() if k != "name"}
                versions[int(number)] = parse_manifest(str(name), data)
            models[str(name)] = versions
            announced: dict[int, Mapping[str, Any]] = {
                int(number): profile
                for number, profile in (entry.get("profiles") or {}).items()
                if int(number) in versions and isinstance(profile, dict)
            }
            if announced:
                profiles[str(name)] = announced
        stages = _parse_versions(document.get("stages"))
        for name, versions in _parse_versions(document.get("sharded")).items():
            models[name] = {**models.get(name, {}), **versions}  # its manifest, with stages
        return NodeInfo(
            id=node_id,
            address=address,
            hardware=str(document.get("hardware", "cpu")),
            memory_bytes=int(document.get("memory_bytes", 0)),
            models=models,
            draining=bool(document.get("draining", False)),
            profiles=profiles,
            region=_region(document.get("region")),
            # an unknown class (a newer node's) is taken for the safe one
            capacity="spot" if document.get("capacity") == "spot" else "on-demand",
            stages=stages,
        )
    except ModelgateError as exc:
        raise ValueError(exc.message) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed node announcement: {exc!r}") from None


def _region(value: Any) -> str:
    """An announced region: a metric label and a response parameter, so bounded."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not valid_region(value):
        raise ValueError(f"a node's region must match {REGION_PATTERN}")
    return value


def _parse_versions(entries: Any) -> dict[str, dict[int, ModelManifest]]:
    """``{name: {"versions": {number: manifest}}}`` of an announcement's ``stages`` (the
    stages a node holds) or ``sharded`` (the manifests of the sharded models they belong to)."""
    from modelgate.core.serving.manifest import parse_manifest

    parsed: dict[str, dict[int, ModelManifest]] = {}
    for name, entry in (entries or {}).items():
        parsed[str(name)] = {
            int(number): parse_manifest(str(name), {k: v for k, v in data.items() if k != "name"})
            for number, data in (entry.get("versions") or {}).items()
        }
    return parsed
