"""Installing an optimized candidate as the next version of its model, all at once
(``repository/versions.py``: assembled in a hidden folder, loaded and run there through the
server's runtime, renamed to the next free number only when complete)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from modelgate import __version__
from modelgate.core.serving.ports import VersionSource
from modelgate.repository import lineage as versions_lineage
from modelgate.repository.filesystem import VERSION_MANIFEST
from modelgate.repository.lineage import LINEAGE_FILE, file_digest, started_by, write_lineage
from modelgate.repository.versions import install_version

__all__ = [
    "LINEAGE_FILE",
    "STAGING_PREFIX",
    "install_version",
    "lineage_record",
    "register_candidate",
]

STAGING_PREFIX = ".staging-optimize-"


def register_candidate(
    repository: Path,
    source: VersionSource,
    candidate_artifact: Path,
    lineage: dict[str, Any],
    validate: Callable[[VersionSource], None],
) -> int:
    """The new version's number. ``validate`` gets the staged version (its real manifest) and
    raises to refuse it; then nothing is installed (repository/versions.py)."""
    return install_version(
        repository / source.manifest.name,
        lambda staging: _assemble(staging, source, candidate_artifact, lineage),
        validate,
        staging_prefix=STAGING_PREFIX,
    )


def _assemble(
    staging: Path, source: VersionSource, artifact: Path, lineage: dict[str, Any]
) -> None:
    original = Path(source.path)
    for entry in original.iterdir():
        if entry.name in (VERSION_MANIFEST, LINEAGE_FILE, source.manifest.artifact):
            continue
        if entry.is_dir():
            shutil.copytree(entry, staging / entry.name)
        else:
            shutil.copy2(entry, staging / entry.name)
    target = staging / source.manifest.artifact
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(artifact, target)
    version_data: dict[str, Any] = {}
    if (original / VERSION_MANIFEST).is_file():
        version_data = yaml.safe_load((original / VERSION_MANIFEST).read_text("utf-8")) or {}
    card = dict(version_data.get("card") or {})
    # measurements of the source no longer describe this file; the lineage carries new ones
    for stale in ("validation_metrics", "cosine_to_sentence_transformers", "quantization"):
        card.pop(stale, None)
    if lineage.get("algorithm"):  # another kind of model (a distilled student)
        card["algorithm"] = lineage["algorithm"]
    card["optimized_from"] = {
        "version": source.version,
        "method": lineage["method"],
        "lineage": LINEAGE_FILE,
    }
    version_data["card"] = card
    header = "# Written by `modelgate optimize --register`; see lineage.json.\n"
    (staging / VERSION_MANIFEST).write_text(
        header + yaml.safe_dump(version_data, sort_keys=False), encoding="utf-8"
    )
    parent = {**lineage["parent"], "artifact": file_digest(original / source.manifest.artifact)}
    record = versions_lineage.lineage_record(
        origin="optimization",
        artifact=target,
        builder={"name": "modelgate optimize", "version": __version__, "method": lineage["method"]},
        parent=parent,
        evaluation=lineage["evaluation"],
        by=lineage["started_by"],
    )
    write_lineage(staging, record)


def lineage_record(
    source: VersionSource, method: str, row: dict[str, Any], *, algorithm: str | None = None
) -> dict[str, Any]:
    """What ``register_candidate`` records of the new version's origin: the version it was
    made from, how, and the candidate's measurement against it; ``algorithm`` replaces the
    card's when the candidate is another kind of model (a distilled student). The
    artifact's hashes are added when it is in place (repository/lineage.py's record, origin
    ``optimization``)."""
    numbers = {
        key: value
        for key, value in row.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return {
        "method": method,
        "algorithm": algorithm,
        "parent": {"model": source.manifest.name, "version": source.version, "relation": method},
        "evaluation": {
            "against": f"version {source.version}, on its reference inputs",
            "metrics": numbers,
            "measurement": row,
        },
        "started_by": started_by(),
    }
