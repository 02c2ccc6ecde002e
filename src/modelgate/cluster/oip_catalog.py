"""What an OIP gRPC server that does not announce itself serves (a static node: Triton,
MLServer, KServe, or a modelgate node listed in ``MODELGATE_NODES``), read with the
protocol's own calls. Used by :class:`~modelgate.cluster.directory.StaticNodeDirectory`.

Two ways, and the servers' quirks each meets:

- **The repository index** (``RepositoryIndex``, ready models only). Triton and modelgate
  answer it with one entry per version (``"1"``), state ``READY``; MLServer with state
  ``State.READY``, and with an empty version for a model whose settings name none. A
  server may refuse it: PyTriton starts Triton with the repository protocol restricted to
  a token (UNAVAILABLE, "This protocol is restricted"), and a plain KServe server has no
  such call (UNIMPLEMENTED).
- **A configured model list** (``MODELGATE_NODE_MODELS``), for a node that refuses its
  index (without the list, such a node serves nothing; logged once per node): each
  refresh asks each listed model's ``ModelMetadata`` (its versions) and ``ModelReady`` per
  version. A model the server does not know (NOT_FOUND, or Triton's "unknown model") is
  not on that node.

**Versions.** A version the server names with digits keeps its number. A model with no
version (MLServer's default), and no numbered one, is shown by the gateway as version 1
and called with an empty version
(:attr:`~modelgate.core.gateway.nodes.NodeInfo.unversioned`): MLServer answers NOT_FOUND to
version "1" of such a model. A version named otherwise ("v2") is left out, logged: the
gateway's routes and pins number versions.

**Signatures.** Each version's ``ModelMetadata`` (asked once per version and kept) becomes
the manifest the gateway validates requests against: its inputs and outputs with names,
datatypes and shapes (``-1`` for a variable dimension). A model whose metadata lists no
inputs or outputs (MLServer's, unless its ``model-settings.json`` declares them) is left
out, logged: the gateway validates every request before it forwards it.

**Bounds** (a static node may be anyone's server): a model name must be one the
repository accepts (:data:`~modelgate.repository.filesystem.MODEL_NAME`; any other is left
out, and logged once per node, escaped and cut to 64 characters); at most ``max_models``
model versions are read per node (``MODELGATE_NODE_MAX_MODELS``; the rest are left out,
logged once); the manifests kept for a node are at most twice as many (the last read's
and the current one's), and those of versions it no longer lists are dropped after each
complete read. The time one node's read may
take is bounded by :class:`~modelgate.cluster.directory.StaticNodeDirectory` (a deadline
per node); manifests read before it passed are kept, so a large index is read over a few
refreshes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.errors import ModelgateError
from modelgate.repository.filesystem import MODEL_NAME

__all__ = ["OipCatalog", "ServedModels"]

log = logging.getLogger("modelgate.cluster")

#: the version a model served without one is shown as
UNVERSIONED = 1
#: a version the gateway keeps as a number (ASCII digits: ``str.isdigit`` takes "²" too)
_NUMBER = re.compile(r"[0-9]{1,9}")
#: quirks remembered (each logged once)
_MAX_WARNED = 4096
#: what a server answers for a model it does not serve: NOT_FOUND (MLServer, modelgate),
#: or UNAVAILABLE with these words (Triton)
_UNKNOWN_WORDS = ("unknown model", "not found")
#: an index the server does not let the gateway read: not implemented (KServe), or
#: restricted (Triton's ``--grpc-restricted-protocol model-repository:...``, as PyTriton
#: starts it)
_NO_INDEX_WORDS = ("restricted",)


#: model versions read from one node unless told otherwise
MAX_MODELS = 1000


@dataclass(slots=True)
class ServedModels:
    """What one node serves: model -> version -> manifest, and the models it serves
    without a version number (called with an empty version)."""

    models: dict[str, dict[int, ModelManifest]] = field(default_factory=dict)
    unversioned: set[str] = field(default_factory=set)
    #: model versions considered (ready, named as the repository allows), up to the cap
    considered: int = 0
    #: (model, version label) of the versions read: their manifests are kept
    read: set[tuple[str, str]] = field(default_factory=set)


def shown(name: str) -> str:
    """A node-supplied name as a log line may carry it: escaped (no newline, no control
    character) and cut to 64 characters."""
    return ascii(name[:64]) + ("..." if len(name) > 64 else "")


def _unknown_model(exc: grpc.aio.AioRpcError) -> bool:
    code = exc.code()
    if code is grpc.StatusCode.NOT_FOUND:
        return True
    details = (exc.details() or "").lower()
    return code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INVALID_ARGUMENT,
    ) and any(w in details for w in _UNKNOWN_WORDS)


def _no_index(exc: grpc.aio.AioRpcError) -> bool:
    if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
        return True
    details = (exc.details() or "").lower()
    return any(w in details for w in _NO_INDEX_WORDS)


def _ready_state(state: str) -> bool:
    """An index entry's state: ``READY`` (Triton, modelgate), ``State.READY`` (MLServer),
    or empty (a server that lists ready models only and says nothing more)."""
    return not state or state.rsplit(".", 1)[-1].upper() == "READY"


def _tensors(items: Any) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]


class OipCatalog:
    """Reads what static nodes serve; keeps each version's manifest (per node) and the
    nodes it has warned about, so a quirk is logged once, not every refresh."""

    def __init__(self, models: Sequence[str] | None = None, *, max_models: int = MAX_MODELS):
        #: the models to ask a node for by name when it keeps its index to itself
        self.listed = tuple(models) if models else None
        #: model versions read from one node at most
        self.max_models = max_models
        #: address -> (model, version label) -> the manifest built from its ModelMetadata
        #: (at most ``2 * max_models`` per node; those it stopped listing are dropped)
        self._manifests: dict[str, dict[tuple[str, str], ModelManifest]] = {}
        self._warned: set[tuple[str, str]] = set()

    def _warn(self, address: str, topic: str, message: str, *args: object) -> None:
        # bounded: a server could name endless odd versions
        if (address, topic) not in self._warned and len(self._warned) < _MAX_WARNED:
            self._warned.add((address, topic))
            log.warning(message, *args)

    async def served(self, stub: Any, address: str, call: dict[str, Any]) -> ServedModels:
        """What the node at ``address`` serves now. Raises ``grpc.aio.AioRpcError`` when
        the node fails in a way that is not about one model (the node is left out)."""
        try:
            index = await stub.RepositoryIndex(
                service_pb2.RepositoryIndexRequest(ready=True), **call
            )
        except grpc.aio.AioRpcError as exc:
            if not _no_index(exc):
                raise
            if self.listed is None:
                self._warn(
                    address,
                    "index",
                    "node %s does not list its models (%s: %s) and serves nothing here: "
                    "name them in MODELGATE_NODE_MODELS (docs/scale-out.md)",
                    address,
                    exc.code().name,
                    exc.details(),
                )
                return ServedModels()
            self._warn(
                address,
                "index",
                "node %s does not list its models (%s): asking it for MODELGATE_NODE_MODELS",
                address,
                exc.code().name,
            )
            found = await self._from_list(stub, address, call, self.listed)
        else:
            found = ServedModels()
            for entry in index.models:
                if _ready_state(entry.state) and self._admits(found, address, entry.name):
                    await self._add(found, stub, address, entry.name, entry.version, call)
        self._forget_unlisted(address, found)
        return found

    def _admits(self, found: ServedModels, address: str, name: str) -> bool:
        """Whether one more model version named ``name`` is read from the node: a name the
        repository accepts, within the node's cap."""
        if not MODEL_NAME.fullmatch(name):
            self._warn(
                address,
                "name",
                "node %s lists a model named %s, which is not a model name: left out "
                "(logged once per node)",
                address,
                shown(name),
            )
            return False
        if found.considered >= self.max_models:
            self._warn(
                address,
                "cap",
                "node %s lists more than %d model versions: the rest are left out "
                "(MODELGATE_NODE_MAX_MODELS)",
                address,
                self.max_models,
            )
            return False
        found.considered += 1
        return True

    def _forget_unlisted(self, address: str, found: ServedModels) -> None:
        """Drop the manifests of the versions the node no longer serves (after a complete
        read: one cut short by the node's deadline never gets here)."""
        kept = self._manifests.get(address)
        if not kept:
            return
        for key in [k for k in kept if k not in found.read]:
            del kept[key]

    async def _from_list(
        self, stub: Any, address: str, call: dict[str, Any], names: Sequence[str]
    ) -> ServedModels:
        found = ServedModels()
        for name in names:
            try:
                meta = await stub.ModelMetadata(
                    service_pb2.ModelMetadataRequest(name=name, version=""), **call
                )
                labels = list(meta.versions) or [""]
                for label in labels:
                    if not self._admits(found, address, name):
                        break
                    ready = await stub.ModelReady(
                        service_pb2.ModelReadyRequest(name=name, version=label), **call
                    )
                    if ready.ready:
                        await self._add(found, stub, address, name, label, call)
            except grpc.aio.AioRpcError as exc:
                if not _unknown_model(exc):
                    raise
                log.debug("node %s does not serve model %s", address, name)
        return found

    async def _add(
        self,
        found: ServedModels,
        stub: Any,
        address: str,
        name: str,
        label: str,
        call: dict[str, Any],
    ) -> None:
        if label and not _NUMBER.fullmatch(label):
            self._warn(
                address,
                f"version:{name}:{label[:64]}",
                "model %s version %r on %s is left out: the gateway numbers versions",
                name,
                label[:64],
                address,
            )
            return
        manifest = await self._manifest(stub, address, name, label, call)
        if manifest is None:
            return
        found.read.add((name, label))
        if label:
            if name in found.unversioned:  # numbered versions win over an unnumbered one
                found.unversioned.discard(name)
                del found.models[name]
            found.models.setdefault(name, {})[int(label)] = manifest
        elif name not in found.models:
            found.models[name] = {UNVERSIONED: manifest}
            found.unversioned.add(name)

    async def _manifest(
        self, stub: Any, address: str, name: str, label: str, call: dict[str, Any]
    ) -> ModelManifest | None:
        kept = self._manifests.setdefault(address, {})
        key = (name, label)
        known = kept.get(key)
        if known is not None:
            return known
        meta = await stub.ModelMetadata(
            service_pb2.ModelMetadataRequest(name=name, version=label), **call
        )
        manifest: ModelManifest | None = None
        if not meta.inputs or not meta.outputs:
            self._warn(
                address,
                f"signature:{name}",
                "model %s on %s is left out: its metadata lists no %s (declare them, e.g. "
                "in MLServer's model-settings.json)",
                name,
                address,
                "inputs" if not meta.inputs else "outputs",
            )
        else:
            try:
                manifest = parse_manifest(
                    name,
                    {
                        "runtime": "remote",
                        "platform": meta.platform or "remote",
                        "inputs": _tensors(meta.inputs),
                        "outputs": _tensors(meta.outputs),
                    },
                )
            except ModelgateError as exc:  # a signature modelgate cannot validate against
                self._warn(
                    address,
                    f"signature:{name}",
                    "model %s on %s is left out: %s",
                    name,
                    address,
                    ascii(exc.message[:300]),  # it may quote the node's metadata
                )
        # one left out is asked again: its server may be fixed. Those of the last read and
        # of this one: at most twice the cap, until this read ends and drops the old ones
        if manifest is not None and len(kept) < 2 * self.max_models:
            kept[key] = manifest
        return manifest
