"""A node's share of sharded models: which stages it holds, and the repository it serves.

**Placement.** A node loads the stages it can fit within its memory budget
(``MODELGATE_MEMORY_BUDGET_MB``; no budget: every stage), each stage a model of its own,
preloaded and pinned (:func:`~modelgate.core.serving.stages.stage_manifest`). When it starts
it reads the node directory and takes the stages the fewest other nodes hold first, so
nodes started one after another spread over the stages and then replicate them; a stage
larger than the budget is never taken (:func:`place_stages`). ``MODELGATE_NODE_STAGES``
(``model:stage,...``) names them instead; a named stage that does not fit is refused at
start. The placement holds for the node's life: a node started later fills the gaps.

**What the node serves.** :class:`StagedRepository` wraps the node's repository (an
all-in-one server's too, with no stages: it skips sharded versions): its whole
versions as before, each held stage as the model ``<model>.stage<k>`` (its folder inside
the version folder, so the memory estimate is the stage's own files), and never a sharded
version as a whole (it has no single file to load). The announcement lists the held stages
under ``stages`` and the sharded versions' own manifests under ``sharded``
(:meth:`StagedRepository.announcement`), from which gateways run the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelgate.core.gateway.ports import NodeDirectory
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import ModelRepository, VersionSource
from modelgate.core.serving.stages import (
    parse_stage_model_name,
    stage_manifest,
    stage_model_name,
)
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["StageSlot", "StagedRepository", "parse_node_stages", "place_stages"]

log = logging.getLogger("modelgate.cluster")


@dataclass(frozen=True, slots=True)
class StageSlot:
    """One stage of one sharded version, and what it takes of a node's budget."""

    model: str
    version: int
    stage: int
    size_bytes: int


def parse_node_stages(text: str | None) -> dict[str, frozenset[int]] | None:
    """``MODELGATE_NODE_STAGES`` (``model:stage,...``) as model -> stage numbers; None
    when unset (the node places itself). INVALID_ARGUMENT naming a malformed entry."""
    if text is None or not text.strip():
        return None
    wanted: dict[str, set[int]] = {}
    for entry in text.split(","):
        model, _, number = entry.strip().rpartition(":")
        if not model or not number.isdigit() or int(number) < 1:
            raise invalid(f"MODELGATE_NODE_STAGES: {entry.strip()!r} is not model:stage")
        wanted.setdefault(model, set()).add(int(number))
    return {model: frozenset(numbers) for model, numbers in wanted.items()}


def place_stages(
    slots: Sequence[StageSlot],
    budget_bytes: int | None,
    held: Mapping[tuple[str, int, int], int],
) -> set[tuple[str, int, int]]:
    """The stages a node takes: the ones the fewest other nodes hold (``held``) first, then
    in model, version and stage order, each while it fits in what is left of the budget."""
    left = budget_bytes
    chosen: set[tuple[str, int, int]] = set()
    for slot in sorted(slots, key=lambda s: (held.get(_key(s), 0), s.model, s.version, s.stage)):
        if left is not None and slot.size_bytes > left:
            continue
        chosen.add(_key(slot))
        if left is not None:
            left -= slot.size_bytes
    return chosen


def _key(slot: StageSlot) -> tuple[str, int, int]:
    return (slot.model, slot.version, slot.stage)


class StagedRepository:
    """A node's repository with the stages it holds (see the module docstring)."""

    def __init__(
        self,
        inner: ModelRepository,
        *,
        budget_bytes: int | None,
        wanted: Mapping[str, frozenset[int]] | None = None,
        directory: NodeDirectory | None = None,
        node_id: str | None = None,
        holds_stages: bool = True,
    ):
        self.inner = inner
        self.budget_bytes = budget_bytes
        self.wanted = wanted
        self.directory = directory
        self.node_id = node_id
        #: false on an all-in-one server: it serves whole versions only, and no stage
        self.holds_stages = holds_stages
        #: (model, version, stage) held; None until :meth:`place` ran
        self.held: set[tuple[str, int, int]] | None = None

    # -- placement -------------------------------------------------------------------------
    def slots(self) -> list[StageSlot]:
        """Every stage of every sharded version in the repository."""
        found = []
        for name in self.inner.names():
            try:
                sources = self.inner.versions(name)
            except ModelgateError:
                continue
            for source in sources:
                for number, stage in enumerate(source.manifest.stages, 1):
                    found.append(StageSlot(name, source.version, number, stage.size_bytes))
        return found

    async def place(self) -> None:
        """Choose the stages to hold (before the registry preloads them)."""
        if not self.holds_stages:
            self.held = set()
            return
        slots = await asyncio.to_thread(self.slots)
        if self.wanted is not None:
            self.held = self._named(slots)
        else:
            self.held = place_stages(slots, self.budget_bytes, await self._held_elsewhere())
        if slots:
            log.info(
                "node %s holds stages %s of %d",
                self.node_id or "",
                ", ".join(f"{m} v{v} stage {k}" for m, v, k in sorted(self.held)) or "none",
                len(slots),
            )

    def _named(self, slots: Sequence[StageSlot]) -> set[tuple[str, int, int]]:
        assert self.wanted is not None
        chosen = [s for s in slots if s.stage in self.wanted.get(s.model, frozenset())]
        total = sum(s.size_bytes for s in chosen)
        if self.budget_bytes is not None and total > self.budget_bytes:
            raise invalid(
                f"MODELGATE_NODE_STAGES names stages of {total} bytes, over the node's memory "
                f"budget of {self.budget_bytes}"
            )
        return {_key(s) for s in chosen}

    async def _held_elsewhere(self) -> Counter[tuple[str, int, int]]:
        counts: Counter[tuple[str, int, int]] = Counter()
        if self.directory is None:
            return counts
        try:
            nodes = await self.directory.nodes()
        except Exception as exc:  # Redis down: place as if no node held anything
            log.warning("stage placement could not read the node directory: %r", exc)
            return counts
        for node in nodes:
            if node.id == self.node_id or node.draining:
                continue
            for name, versions in node.stages.items():
                parsed = parse_stage_model_name(name)
                if parsed is not None:
                    for version in versions:
                        counts[(parsed[0], version, parsed[1])] += 1
        return counts

    def _holds(self, model: str, version: int, stage: int) -> bool:
        return self.held is not None and (model, version, stage) in self.held

    # -- the repository ----------------------------------------------------------------------
    def names(self) -> list[str]:
        found: set[str] = set()
        for name in self.inner.names():
            try:
                sources = self.inner.versions(name)
            except ModelgateError:
                found.add(name)  # the registry reports its problem, as without stages
                continue
            if any(not s.manifest.stages for s in sources) or not sources:
                found.add(name)
            for source in sources:
                for number in range(1, len(source.manifest.stages) + 1):
                    if self._holds(name, source.version, number):
                        found.add(stage_model_name(name, number))
        return sorted(found)

    def versions(self, name: str, override: Mapping[str, Any] | None = None) -> list[VersionSource]:
        parsed = parse_stage_model_name(name)
        if parsed is not None and parsed[0] in self.inner.names():
            model, number = parsed
            if override:
                raise ModelgateError(
                    ErrorKind.UNSUPPORTED, "a stage of a sharded model takes no override"
                )
            held = [
                VersionSource(
                    s.version,
                    os.path.join(s.path, os.path.dirname(s.manifest.stages[number - 1].artifact)),
                    stage_manifest(s.manifest, number),
                )
                for s in self.inner.versions(model)
                if len(s.manifest.stages) >= number and self._holds(model, s.version, number)
            ]
            if not held:
                raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
            return held
        sources = self.inner.versions(name, override)
        whole = [s for s in sources if not s.manifest.stages]
        if sources and not whole:
            raise ModelgateError(
                ErrorKind.NOT_FOUND,
                f"model '{name}' is sharded: its nodes serve its stages, through a gateway",
            )
        return whole

    def sharded(self) -> dict[str, dict[int, ModelManifest]]:
        """The sharded versions this node holds a stage of, with their own manifests."""
        found: dict[str, dict[int, ModelManifest]] = {}
        for model, version, _stage in sorted(self.held or ()):
            for source in self.inner.versions(model):
                if source.version == version:
                    found.setdefault(model, {})[version] = source.manifest
        return found

    def announcement(self) -> dict[str, Any]:
        """The announcement's ``stages`` and ``sharded`` entries (reads manifests: call it
        in a thread)."""
        stages: dict[str, Any] = {}
        for model, version, number in sorted(self.held or ()):
            name = stage_model_name(model, number)
            try:
                sources = self.versions(name)
            except ModelgateError:
                continue  # removed from the repository since
            entry = stages.setdefault(name, {"versions": {}})
            for source in sources:
                if source.version == version:
                    entry["versions"][str(version)] = source.manifest.model_dump(
                        mode="json", exclude={"name"}
                    )
        sharded = {
            model: {
                "versions": {
                    str(v): m.model_dump(mode="json", exclude={"name"}) for v, m in versions.items()
                }
            }
            for model, versions in self.sharded().items()
        }
        return {"stages": stages, "sharded": sharded}
