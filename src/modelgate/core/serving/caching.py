"""The result cache: answers of models whose manifest has a ``cache`` section, kept for its
``ttl_seconds`` and served again for the same inputs (docs/caching.md).

- A key names everything an answer depends on: the tenant (unless the model is
  ``shareable``), the model, the version that answers and its identity (a digest of the
  version's files and manifest, so a reload of changed weights never meets an old entry),
  the requested outputs with their parameters, and the validated input arrays (name,
  datatype, shape, bytes; BYTES element by element). Two requests share an entry only when
  all of these are equal.
- :class:`~modelgate.core.serving.ports.ResultStore` is the port (in memory:
  ``modelgate.storage.memory.cache``; Redis: ``modelgate.storage.redis.cache``). A store
  never fails a request: an unreachable store is a miss, and a write that cannot be made is
  dropped.
- ``Cache-Control`` directives of the request (the REST header, the gRPC metadata, or the
  request parameter ``cache_control``): ``no-cache`` skips the lookup, ``no-store`` the
  write. A request naming a data subject (parameter ``subject``) is never written, so there
  is nothing to erase per subject (docs/privacy.md).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelgate.core.serving.manifest import CacheSpec, ModelManifest
from modelgate.core.serving.ports import CachedResult, CacheObserver, ResultStore
from modelgate.core.serving.signature import RequestedOutput
from modelgate.core.serving.tensors import Parameters, Tensor
from modelgate.errors import ErrorKind

if TYPE_CHECKING:
    from modelgate.core.serving.registry import LoadedVersion
    from modelgate.core.serving.statistics import VersionStats

__all__ = [
    "STALE_KINDS",
    "CacheTicket",
    "ResultCache",
    "cache_directives",
    "result_key",
    "version_identity",
]

log = logging.getLogger("modelgate.cache")

#: the request parameter that carries ``Cache-Control`` directives over any protocol
CACHE_CONTROL_PARAMETER = "cache_control"
#: the request parameter naming a data subject (as core.governance reads it)
SUBJECT_PARAMETER = "subject"
#: failures of the runtime after which an expired entry within ``stale_seconds`` answers
STALE_KINDS = frozenset({ErrorKind.UNAVAILABLE, ErrorKind.OVERLOADED, ErrorKind.DEADLINE_EXCEEDED})
#: output parameters that change only how an answer is encoded, not what it holds
_ENCODING_PARAMETERS = frozenset({"binary_data"})
_LENGTH = struct.Struct("<Q")


@dataclass(slots=True)
class CacheTicket:
    """What one request may do with the cache, decided once its inputs are validated."""

    cache: ResultCache
    key: str
    model: str
    spec: CacheSpec
    may_lookup: bool
    may_store: bool
    #: an expired entry found by the lookup that may still answer while the model fails
    stale: CachedResult | None = None

    def outcome(self, answer: CachedResult | None) -> str:
        """What the response says: ``miss`` (the model answered), ``hit`` or ``stale``."""
        return "miss" if answer is None else "stale" if answer is self.stale else "hit"

    async def lookup(self, stats: VersionStats) -> CachedResult | None:
        return await self.cache.lookup(self, stats)

    def stale_for(self, kind: ErrorKind) -> CachedResult | None:
        return self.cache.stale(self, kind)

    def keep(self, model_version: str, outputs: Sequence[Tensor], rows: int, tokens: int) -> None:
        self.cache.keep(self, model_version, outputs, rows, tokens)


def cache_directives(value: object) -> tuple[bool, bool]:
    """``(no_cache, no_store)`` of a ``Cache-Control`` value; anything unknown is ignored."""
    if not isinstance(value, str):
        return False, False
    parts = {part.strip().lower() for part in value.split(",")}
    return "no-cache" in parts or "max-age=0" in parts, "no-store" in parts


def result_key(
    tenant: str | None,
    model: str,
    version: str,
    identity: str,
    requested: Sequence[RequestedOutput] | None,
    inputs: Mapping[str, np.ndarray[Any, Any]],
    datatypes: Mapping[str, str],
) -> str:
    """The key of an answer: a SHA-256 over every field, each length-prefixed so that no
    two different requests write the same byte stream. ``tenant`` None: shareable."""
    digest = hashlib.sha256(b"modelgate-result-v1")

    def field(value: bytes) -> None:
        digest.update(_LENGTH.pack(len(value)))
        digest.update(value)

    field(b"*" if tenant is None else b"t:" + tenant.encode())
    for text in (model, version, identity):
        field(text.encode())
    if requested is None:
        field(b"*")
    else:
        field(str(len(requested)).encode())
        for output in requested:
            params = {k: v for k, v in output.parameters.items() if k not in _ENCODING_PARAMETERS}
            field(output.name.encode())
            field(json.dumps(params, sort_keys=True, default=str).encode())
    for name in sorted(inputs):
        array = inputs[name]
        field(name.encode())
        field(datatypes[name].encode())
        field(",".join(map(str, array.shape)).encode())
        if array.dtype == object:
            field(str(array.size).encode())
            for item in array.reshape(-1):
                field(item.encode() if isinstance(item, str) else bytes(item))
        else:
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            field(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def version_identity(manifest: ModelManifest, path: str) -> str:
    """A digest of a version's manifest and of every file in its folder (path, size and
    content): equal on every replica serving the same files, different after any change."""
    digest = hashlib.sha256(manifest.model_dump_json().encode())
    if path:
        # Only regular files that resolve inside the version's or the model's folder are
        # read: a link to /dev/zero, a FIFO or a file elsewhere would hang or leak.
        roots = (Path(path).resolve(), Path(path).parent.resolve())
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                try:
                    real = Path(full).resolve(strict=True)
                except (OSError, RuntimeError):
                    continue  # vanished, dangling or a loop
                if not real.is_file() or not any(real.is_relative_to(r) for r in roots):
                    continue
                digest.update(os.path.relpath(full, path).encode() + b"\0")
                try:
                    with open(real, "rb") as handle:
                        while chunk := handle.read(1 << 20):
                            digest.update(chunk)
                except OSError:
                    continue  # a file that vanished: the rest still names the version
    return digest.hexdigest()[:32]


class ResultCache:
    """The cache as the inference service uses it; one per process."""

    def __init__(
        self,
        store: ResultStore,
        *,
        observer: CacheObserver | None = None,
        max_entry_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.observer = observer
        self.max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._identities: weakref.WeakKeyDictionary[LoadedVersion, str] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # versions of several models may load at once
        self._generation = itertools.count(1)

    def prepare(self, loaded: LoadedVersion) -> None:
        """The registry's load hook (in the loading thread): digest the version's files
        when its manifest caches, before it serves."""
        if loaded.manifest.cache is None:
            return
        identity = version_identity(loaded.manifest, loaded.path)
        with self._lock:
            self._identities[loaded] = identity

    def identity(self, loaded: LoadedVersion) -> str:
        """The version's digest; a version built without the load hook (a gateway's
        handle to its nodes) gets its manifest's digest and a number unique to this
        process and load, so its entries are never shared with another process."""
        found = self._identities.get(loaded)
        if found is None:
            manifest = version_identity(loaded.manifest, "")
            found = f"{manifest}:{os.getpid()}:{next(self._generation)}:{time.time_ns()}"
            with self._lock:
                self._identities[loaded] = found
        return found

    def ticket(
        self,
        loaded: LoadedVersion,
        tenant: str,
        parameters: Parameters,
        cache_control: str | None,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        requested: Sequence[RequestedOutput] | None,
    ) -> CacheTicket | None:
        """What this request may do with the cache; None when the model does not cache."""
        spec = loaded.manifest.cache
        if spec is None:
            return None
        no_cache, no_store = cache_directives(
            cache_control if cache_control is not None else parameters.get(CACHE_CONTROL_PARAMETER)
        )
        datatypes = {spec_.name: spec_.datatype for spec_ in loaded.manifest.inputs}
        key = result_key(
            None if spec.shareable else tenant,
            loaded.name,
            str(loaded.version),
            self.identity(loaded),
            requested,
            inputs,
            datatypes,
        )
        # a data subject's answers are not kept, so erasure has nothing to find (any
        # ``subject`` counts, even one governance.subject_of would not take as an id)
        store = not no_store and parameters.get(SUBJECT_PARAMETER) is None
        return CacheTicket(self, key, loaded.name, spec, may_lookup=not no_cache, may_store=store)

    async def lookup(self, ticket: CacheTicket, stats: VersionStats) -> CachedResult | None:
        """A fresh entry (a hit), or None (a miss; an expired entry within its stale time
        is kept on the ticket for :meth:`stale`)."""
        if not ticket.may_lookup:
            self._event(ticket.model, "miss")
            return None
        start = time.perf_counter_ns()
        found = await self.store.get(ticket.key)
        hit = found is not None and found.fresh_until > self._clock()
        stats.cache_lookup(hit, time.perf_counter_ns() - start)
        self._event(ticket.model, "hit" if hit else "miss")
        if hit:
            return found
        ticket.stale = found
        return None

    def stale(self, ticket: CacheTicket, kind: ErrorKind) -> CachedResult | None:
        """The expired entry that may answer instead of the error ``kind``, or None."""
        found = ticket.stale
        if found is None or kind not in STALE_KINDS or found.stale_until <= self._clock():
            return None
        self._event(ticket.model, "stale")
        return found

    def keep(
        self,
        ticket: CacheTicket,
        model_version: str,
        outputs: Sequence[Tensor],
        rows: int,
        tokens: int,
    ) -> None:
        """Keep a fresh answer (copied and made read-only: the caller's arrays may be
        views of a whole batch), unless the request or its size rules it out."""
        if not ticket.may_store:
            return
        kept: list[Tensor] = []
        for tensor in outputs:
            data = np.array(tensor.data, copy=True)
            data.flags.writeable = False
            kept.append(Tensor(tensor.name, tensor.datatype, data, dict(tensor.parameters)))
        now = self._clock()
        spec = ticket.spec
        result = CachedResult(
            model=ticket.model,
            model_version=model_version,
            outputs=tuple(kept),
            rows=rows,
            tokens=tokens,
            stored_at=now,
            fresh_until=now + spec.ttl_seconds,
            stale_until=now + spec.ttl_seconds + spec.stale_seconds,
        )
        if result.size_bytes() > self.max_entry_bytes:
            return
        self.store.put(ticket.key, result)
        self._event(ticket.model, "store")

    async def close(self) -> None:
        await self.store.close()

    def _event(self, model: str, event: str) -> None:
        if self.observer is not None:
            self.observer.cache_event(model, event)
